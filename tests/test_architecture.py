"""The house rules of docs/architecture.md, checked on the source: which package may
import which, where gRPC may appear, and no import circle anywhere (lazy imports and
``TYPE_CHECKING`` imports count: a circle held apart by either is still a circle)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "router", "models")

# Top to bottom: a sub-package of server/ may import its own and the ones below it.
SERVER_LAYERS = ("runtime", "transport", "serving", "monitoring", "storage", "telemetry")
# Where gRPC (grpc, grpc_*, the generated waybill.v1 and inference stubs) may be imported at
# all; the OTLP exporter speaks gRPC too, and only telemetry's export may load it.
GRPC_ALLOWED = ("server.runtime", "server.transport")
GRPC_MODULES = ("grpc", "grpc_health", "grpc_reflection", "grpc_status", "waybill",
                "inference")
OTLP_GRPC = "opentelemetry.exporter.otlp.proto.grpc"
# What router/ may import of the project: itself and the naming rules of versions.
ROUTER_ALLOWED = ("router", "models.naming")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, name: str, known: Iterable[str]) -> set[str]:
    """Every module ``path`` imports, anywhere in the file; ``from a import b`` counts as
    ``a.b`` when that is a module of the project."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(SERVER_LAYERS):
        if within(module, f"server.{layer}"):
            return index
    return None


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing
    itself (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b", "x"}}) == []


def test_no_import_circle_anywhere() -> None:
    assert cycles(graph()) == []


def test_every_server_module_lives_in_a_layer() -> None:
    loose = [m for m in project_modules() if within(m, "server") and m != "server"
             and layer_of(m) is None]
    assert loose == []


def test_server_layers_import_only_downwards() -> None:
    wrong = []
    for module, imported in graph().items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in imported:
            theirs = layer_of(target)
            if theirs is not None and theirs < mine:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_grpc_stays_in_transport_and_runtime() -> None:
    wrong = [f"{module} imports {target}"
             for module, imported in graph().items()
             if not any(within(module, allowed) for allowed in GRPC_ALLOWED)
             for target in imported
             if any(within(target, g) for g in GRPC_MODULES)
             or (within(target, OTLP_GRPC) and module != "server.telemetry.export")]
    assert wrong == []


@pytest.mark.parametrize(("package", "allowed"), [
    ("router", ROUTER_ALLOWED),
    ("models", ("models",)),
])
def test_pure_packages_import_only_what_they_may(package: str, allowed: tuple[str, ...],
                                                 ) -> None:
    modules = project_modules()
    wrong = [f"{module} imports {target}"
             for module, imported in graph().items() if within(module, package)
             for target in imported
             if any(within(target, p) for p in PACKAGES)
             and not any(within(target, a) for a in allowed)
             and target in modules]
    assert wrong == []


def test_alert_rules_are_monitorings_not_the_routers() -> None:
    router_text = "\n".join(p.read_text() for p in (ROOT / "router").rglob("*.py"))
    assert "AlertRule" not in router_text and "Metric" not in router_text


# What the layers above storage may import of it: the interface, and (the composition root
# only) the module that opens the backend --database names. Never a backend itself, nor a
# driver: the store's users work on either backend unchanged.
STORAGE_INTERFACE = "server.storage.base"
STORAGE_CHOOSER = ("server.storage.backends", "server.runtime.app")
DRIVERS = ("sqlite3", "psycopg", "psycopg_pool")


def test_only_storage_knows_its_backends() -> None:
    modules = project_modules()
    wrong = []
    for module, imported in graph().items():
        if within(module, "server.storage"):
            continue
        for target in imported:
            if (within(target, "server.storage") and target in modules
                    and target not in ("server.storage", STORAGE_INTERFACE)
                    and (target, module) != STORAGE_CHOOSER):
                wrong.append(f"{module} imports {target}")
            if (any(within(target, d) for d in DRIVERS) and within(module, "server")
                    and module != STORAGE_CHOOSER[1]):
                wrong.append(f"{module} imports the driver {target}")
    assert wrong == []


def test_psycopg_only_in_the_postgresql_backend() -> None:
    wrong = [f"{module} imports {target}"
             for module, imported in graph().items()
             for target in imported
             if (within(target, "psycopg") or within(target, "psycopg_pool"))
             and module != "server.storage.postgres"]
    assert wrong == []
