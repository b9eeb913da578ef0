"""Read a SAM template the way `sam local invoke` does: short tags, Globals, parameters, intrinsics.

Only what running a function locally needs is resolved: a function's Handler, CodeUri, Runtime,
Timeout, MemorySize, Layers and Environment, with Globals merged in (maps merged, lists appended,
scalars overridden, as SAM does) and `!Ref`/`!Sub`/`!If`/... evaluated against parameter defaults,
overrides and SAM's local pseudo-parameter values. Whatever cannot be known off AWS (`!GetAtt`,
`!ImportValue`) resolves to UNRESOLVED, which an environment variable turns into "" — SAM's rule.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

FUNCTION_TYPES = ("AWS::Serverless::Function",)
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")

# The values `sam local` uses for pseudo-parameters (samcli IntrinsicsSymbolTable defaults).
PSEUDO_PARAMETERS = {
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "local",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/local/51af3dc0-da77-11e4-872e-1234567db123",
    "AWS::URLSuffix": "localhost",
    "AWS::NotificationARNs": [],
}


class _Unresolved:
    """A value only CloudFormation could supply (an attribute of a deployed resource)."""

    def __repr__(self) -> str:
        return "UNRESOLVED"


UNRESOLVED = _Unresolved()
_NO_VALUE = object()


class TemplateError(ConfigError):
    reason = "template_error"


# --- YAML with CloudFormation short tags ------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref X` into `{"Ref": "X"}`, `!GetAtt A.B` into `{"Fn::GetAtt": ["A", "B"]}`..."""


def _construct(tag: str):
    key = "Ref" if tag == "Ref" else ("Condition" if tag == "Condition" else f"Fn::{tag}")

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            assert isinstance(node, yaml.MappingNode)  # the one other kind of node
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    return construct


for _tag in ("Ref", "Condition", "Sub", "GetAtt", "If", "Equals", "Not", "And", "Or", "Join", "Select", "Split",
             "FindInMap", "Base64", "Cidr", "ImportValue", "GetAZs", "Transform", "Length", "ToJsonString"):
    CfnLoader.add_constructor(f"!{_tag}", _construct(_tag))


def load_template(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {p}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TemplateError(f"template {p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"template {p} has no Resources section")
    return data


# --- the resolved view of one function ---------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    logical_id: str
    """The layer's logical id in the template, or its ARN when given by one."""
    content_dir: Path | None
    """Local ContentUri; None for a layer given by ARN (not available locally)."""
    build_method: str | None = None

    def import_paths(self) -> list[Path]:
        """What Lambda puts on sys.path from this layer once it is mounted at /opt."""
        if self.content_dir is None:
            return []
        if self.build_method and self.build_method.startswith("python"):
            # SAM's pip builder puts the ContentUri's code under python/ itself.
            return [self.content_dir]
        paths = []
        for sub in sorted(self.content_dir.glob("python/lib/python3*/site-packages")):
            paths.append(sub)
        if (self.content_dir / "python").is_dir():
            paths.append(self.content_dir / "python")
        return paths


@dataclass(frozen=True)
class FunctionConfig:
    logical_id: str
    function_name: str
    handler: str
    runtime: str
    code_dir: Path
    timeout_s: float
    memory_mb: int
    architecture: str
    layers: list[Layer]
    environment: dict[str, Any]
    """Declared variables with their template values (may be UNRESOLVED, lists, numbers...)."""
    properties: dict[str, Any] = field(default_factory=dict)


class Template:
    def __init__(self, path: str | Path, parameter_overrides: dict[str, str] | None = None,
                 pseudo_overrides: dict[str, Any] | None = None) -> None:
        self.path = Path(path).resolve()
        self.base_dir = self.path.parent
        self.data = load_template(self.path)
        self.resources: dict[str, Any] = self.data["Resources"]
        self.pseudo = {**PSEUDO_PARAMETERS, **(pseudo_overrides or {})}
        self.parameters = self._parameter_values(parameter_overrides or {})
        self._conditions: dict[str, bool] = {}

    # -- parameters and conditions

    def _parameter_values(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared: dict[str, Any] = self.data.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"unknown parameter(s) {', '.join(unknown)}; the template declares: "
                                f"{', '.join(sorted(declared)) or '(none)'}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            spec = spec or {}
            if name in overrides:
                value: Any = overrides[name]
                allowed = spec.get("AllowedValues")
                if allowed and str(value) not in [str(a) for a in allowed]:
                    raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
            elif "Default" in spec:
                value = spec["Default"]
            else:
                value = UNRESOLVED
            if value is not UNRESOLVED and str(spec.get("Type", "")).startswith(("CommaDelimitedList", "List<")):
                value = [] if str(value) == "" else [v.strip() for v in str(value).split(",")]
            values[name] = value
        return values

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.data.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"condition {name!r} is not defined in the template")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    # -- intrinsics

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic function evaluated; AWS::NoValue entries dropped."""
        out = self._resolve(value)
        return None if out is _NO_VALUE else out

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self._resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if _is_intrinsic(value):
            (key, arg), = value.items()
            return self._intrinsic(key, arg)
        resolved = {k: self._resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            # What `sam local` does for a resource it cannot create: its logical id stands in.
            return name
        raise TemplateError(f"!Ref {name}: no such parameter or resource")

    def _intrinsic(self, key: str, arg: Any) -> Any:  # noqa: C901 - one branch per intrinsic
        if key == "Ref":
            return self._ref(str(arg))
        if key == "Condition":
            return self.condition(str(arg))
        fn = key.removeprefix("Fn::")
        if fn == "If":
            cond, when_true, when_false = arg
            return self._resolve(when_true if self.condition(cond) else when_false)
        if fn == "Equals":
            a, b = (self._resolve(x) for x in arg)
            return str(a) == str(b) if not (isinstance(a, list) or isinstance(b, list)) else a == b
        if fn == "Not":
            return not self._truth(arg[0])
        if fn == "And":
            return all(self._truth(a) for a in arg)
        if fn == "Or":
            return any(self._truth(a) for a in arg)
        if fn == "Sub":
            return self._sub(arg)
        if fn == "Join":
            sep, items = arg
            items = self._resolve(items)
            if items is UNRESOLVED or any(i is UNRESOLVED for i in items):
                return UNRESOLVED
            return str(sep).join(str(i) for i in items)
        if fn == "Select":
            index, items = self._resolve(arg[0]), self._resolve(arg[1])
            if items is UNRESOLVED:
                return UNRESOLVED
            return items[int(index)]
        if fn == "Split":
            sep, text = arg[0], self._resolve(arg[1])
            return UNRESOLVED if text is UNRESOLVED else str(text).split(str(sep))
        if fn == "FindInMap":
            name, top, second = (self._resolve(x) for x in arg[:3])
            try:
                return self.data["Mappings"][name][top][second]
            except (KeyError, TypeError):
                raise TemplateError(f"!FindInMap [{name}, {top}, {second}]: not in Mappings") from None
        if fn == "Base64":
            text = self._resolve(arg)
            return UNRESOLVED if text is UNRESOLVED else base64.b64encode(str(text).encode()).decode()
        if fn == "Length":
            items = self._resolve(arg)
            return UNRESOLVED if items is UNRESOLVED else len(items)
        # GetAtt, ImportValue, GetAZs, Cidr, Transform, ToJsonString: only CloudFormation knows.
        return UNRESOLVED

    def _truth(self, value: Any) -> bool:
        resolved = self._resolve(value)
        if isinstance(resolved, str):
            return resolved.lower() == "true"
        return bool(resolved) and resolved is not UNRESOLVED

    _SUB = re.compile(r"\$\{([^}]+)\}")

    def _sub(self, arg: Any) -> Any:
        if isinstance(arg, list):
            text, local = arg[0], {k: self._resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, local = arg, {}
        unresolved = False

        def replace(m: re.Match[str]) -> str:
            nonlocal unresolved
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                value = local[name]
            elif "." in name and name.split(".", 1)[0] in self.resources:
                value = UNRESOLVED  # ${Resource.Attribute} is a GetAtt
            else:
                value = self._ref(name)
            if value is UNRESOLVED or value is _NO_VALUE:
                unresolved = True
                return ""
            return ",".join(map(str, value)) if isinstance(value, list) else str(value)

        out = self._SUB.sub(replace, str(text))
        return UNRESOLVED if unresolved else out

    # -- functions and layers

    def function_ids(self) -> list[str]:
        return sorted(k for k, v in self.resources.items() if isinstance(v, dict) and v.get("Type") in FUNCTION_TYPES)

    def _merged_properties(self, logical_id: str) -> dict[str, Any]:
        globals_fn = ((self.data.get("Globals") or {}).get("Function")) or {}
        props = self.resources[logical_id].get("Properties") or {}
        return _merge_globals(globals_fn, props)

    def function(self, logical_id: str) -> FunctionConfig:
        if logical_id not in self.function_ids():
            names = ", ".join(self.function_ids()) or "(none)"
            raise TemplateError(f"function {logical_id!r} is not in {self.path.name}; its functions are: {names}",
                                reason="unknown_function")
        props = self.resolve(self._merged_properties(logical_id)) or {}
        if props.get("PackageType", "Zip") != "Zip":
            raise TemplateError(f"{logical_id}: only Zip functions can be invoked locally")
        runtime = str(props.get("Runtime", ""))
        if not runtime.startswith("python"):
            raise TemplateError(f"{logical_id}: runtime {runtime or '(none)'} is not Python")
        handler = props.get("Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"{logical_id}: Handler must look like module.function, got {handler!r}")
        code_uri = props.get("CodeUri", ".")
        if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
            raise TemplateError(f"{logical_id}: CodeUri {code_uri!r} is not a local directory")
        code_dir = (self.base_dir / code_uri).resolve()
        if not code_dir.is_dir():
            raise TemplateError(f"{logical_id}: CodeUri {code_uri} does not exist ({code_dir})")
        name = props.get("FunctionName")
        variables = ((props.get("Environment") or {}).get("Variables")) or {}
        architectures = props.get("Architectures") or ["x86_64"]
        return FunctionConfig(
            logical_id=logical_id,
            function_name=name if isinstance(name, str) and name else logical_id,
            handler=handler,
            runtime=runtime,
            code_dir=code_dir,
            timeout_s=float(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            architecture=str(architectures[0]),
            layers=[self._layer(ref) for ref in props.get("Layers") or []],
            environment=dict(variables),
            properties=props,
        )

    def _layer(self, ref: Any) -> Layer:
        # After resolution a `!Ref CommonLayer` is the layer's logical id; an ARN stays an ARN.
        ref_s = str(ref)
        resource = self.resources.get(ref_s)
        if not isinstance(resource, dict) or resource.get("Type") not in LAYER_TYPES:
            return Layer(logical_id=ref_s, content_dir=None)
        props = self.resolve(resource.get("Properties") or {}) or {}
        content = props.get("ContentUri", props.get("Content"))
        if not isinstance(content, str) or content.startswith("s3://"):
            return Layer(logical_id=ref_s, content_dir=None)
        method = (resource.get("Metadata") or {}).get("BuildMethod")
        return Layer(logical_id=ref_s, content_dir=(self.base_dir / content).resolve(), build_method=method)


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return isinstance(key, str) and (key in ("Ref", "Condition") or key.startswith("Fn::"))


def _merge_globals(glob: Any, local: Any) -> Any:
    """SAM's Globals rules: maps merge (local wins per key), lists append, anything else: local wins."""
    if isinstance(glob, dict) and isinstance(local, dict) and not _is_intrinsic(glob) and not _is_intrinsic(local):
        merged = dict(glob)
        for key, value in local.items():
            merged[key] = _merge_globals(glob[key], value) if key in glob else value
        return merged
    if isinstance(glob, list) and isinstance(local, list):
        return glob + local
    return local
