"""Inside a private mount namespace (`unshare --mount --propagation private`), lay out one function
as Lambda does, check that only /tmp is writable, then become the runtime:
`python3.13 -m awslambdaric <handler>` in /var/task with Lambda's environment and nothing else.

Argument: a JSON object {task, opt, runtime, python, handler, env}. Mounts made here vanish with
the namespace; the machine's own mounts are untouched.
"""

import json
import os
import subprocess
import sys
import tempfile

KERNEL = ("/proc", "/sys", "/dev")
WRITABLE = "/tmp"
MUST_BE_READ_ONLY = ("/", "/var/task", "/opt", "/var/runtime", "/var", "/root", "/usr", "/etc", "/home", "/work")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # \040 and the like
            points.append(point)
    return points


def bind_read_only(source: str, target: str) -> None:
    mount("--bind", source, target)
    mount("-o", "remount,bind,ro", target)


def main() -> None:
    spec = json.loads(sys.argv[1])
    # Bind sources may live under /tmp: bind them before /tmp becomes a fresh tmpfs.
    for point in mount_points():
        if point.startswith(KERNEL) or point == "/dev":
            continue
        # A mount that cannot be made read-only fails the layout: the probe below would catch it too.
        subprocess.run(["mount", "-o", "remount,bind,ro", point], check=False, capture_output=True)
    # Lambda's /var is its own: a small tmpfs holding the mount points, then read-only too.
    mount("-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", "/var")
    for name in ("task", "runtime", "lang"):
        os.mkdir(f"/var/{name}")
    bind_read_only(spec["task"], "/var/task")
    bind_read_only(spec["runtime"], "/var/runtime")
    mount("-o", "remount,ro", "/var")
    bind_read_only(spec["opt"], "/opt")
    mount("-t", "tmpfs", "-o", "size=512m,mode=1777", "tmpfs", WRITABLE)
    if os.path.isdir("/dev/shm"):  # Lambda has no shared memory: multiprocessing's queues fail there too
        mount("-t", "tmpfs", "-o", "ro,size=4k,mode=0555", "tmpfs", "/dev/shm")

    for path in MUST_BE_READ_ONLY:
        if not os.path.isdir(path):
            continue
        try:
            fd, name = tempfile.mkstemp(dir=path)
        except OSError:
            continue
        os.close(fd)
        os.unlink(name)
        sys.exit(f"lambda_sandbox: {path} is writable; Lambda's is not")
    os.chdir("/var/task")
    python = spec["python"]
    # -S: this interpreter's own site-packages are not Lambda's (/var/runtime stands for those), so
    # a package the layer lacks cannot be found there by accident.
    os.execve(python, [python, "-S", "-m", "awslambdaric", spec["handler"]], spec["env"])


if __name__ == "__main__":
    main()
