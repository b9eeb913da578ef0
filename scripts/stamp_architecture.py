"""Stamp a `sam build` output's template with the architecture its layer was built for.

`sam build` copies the template's Architecture parameter as written (default arm64), so after
`make build ARCH=x86_64` a plain `sam deploy` would create arm64 functions with x86_64 wheels and
every cold start would fail. The built template's parameter allows only the built architecture.
Usage: python stamp_architecture.py BUILD_DIR/template.yaml ARCH
"""

import sys
from pathlib import Path

import yaml


def main() -> None:
    path, arch = Path(sys.argv[1]), sys.argv[2]
    template = yaml.safe_load(path.read_text())  # sam build writes plain YAML (no !Ref short forms)
    parameter = template["Parameters"]["Architecture"]
    parameter["Default"] = arch
    parameter["AllowedValues"] = [arch]
    parameter["Description"] = f"Fixed by `make build ARCH={arch}`: the layer's compiled wheels run on {arch} only."
    path.write_text(yaml.safe_dump(template, sort_keys=False, width=120))


if __name__ == "__main__":
    main()
