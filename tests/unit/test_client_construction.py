"""Every Kafka client and Cassandra Cluster the system builds takes its connection settings
(bootstrap, security protocol, SASL, TLS) from the shared settings objects (issue #18).

Kafka: each `Producer(...)`, `Consumer(...)` and `AdminClient(...)` in the shipped packages must
get a configuration that provably starts from `KafkaSettings.client_config()`: a call to it, a
dict spreading such a value, a local variable or attribute assigned only such values, a function
returning only such values, or a parameter that every caller in the shipped code fills with such
a value. A client configured any other way (say `{"bootstrap.servers": ...}`) would connect
without TLS or SASL on a cluster that requires them; this test names it.

Cassandra: `scheduler.store.cassandra.connect` is the one place a Cluster is built, and it
passes the TLS context built from CassandraSettings.
"""

from __future__ import annotations

import ast
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.query import named_tuple_factory

from scheduler.settings import CassandraSettings
from scheduler.store import cassandra as cassandra_store
from tests.support.python_source import parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# What ships: the library (minus its test support, which talks to the plaintext local stack)
# and the services.
SHIPPED = [ROOT / "libs" / "scheduler", *sorted((ROOT / "services").glob("*/scheduler_*"))]
TEST_SUPPORT = ROOT / "libs" / "scheduler" / "testing"
KAFKA_CLIENTS = {
    "Producer",
    "Consumer",
    "AdminClient",
    "SerializingProducer",
    "DeserializingConsumer",
    "AIOKafkaProducer",
    "AIOKafkaConsumer",
}
SETTINGS_CALL = "client_config"


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


@dataclass
class Module:
    path: Path
    name: str  # dotted
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]

    @classmethod
    def parse(cls, path: Path, name: str, source: str | None = None) -> Module:
        tree = parse(source if source is not None else path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        return cls(path, name, tree, parents)

    def defines(self, function: str) -> bool:
        return any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == function
            for node in self.tree.body
        )

    def imported_from(self, function: str) -> str | None:
        """The dotted module `function` is imported from here, if it is."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and any(
                (alias.asname or alias.name) == function for alias in node.names
            ):
                package = self.name.rsplit(".", node.level)[0] if node.level else ""
                return ".".join(filter(None, [package, node.module]))
        return None

    def enclosing(self, node: ast.AST) -> Iterator[ast.AST]:
        while node in self.parents:
            node = self.parents[node]
            yield node


class Provenance:
    """Decides whether an expression's value provably starts from `client_config()`."""

    def __init__(self, modules: list[Module]) -> None:
        self.modules = modules
        self._busy: set[tuple[int, str]] = set()  # recursion guard (a cycle proves nothing)

    def kafka_client_calls(self) -> Iterator[tuple[Module, ast.Call]]:
        for module in self.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call) and _called_name(node) in KAFKA_CLIENTS:
                    yield module, node

    def configured(self, module: Module, call: ast.Call) -> bool:
        config = call.args[0] if call.args else _keyword(call, "conf", "config")
        return config is not None and self.derived(module, config)

    def resolves_to(self, module: Module, call: ast.Call, definer: Module, name: str) -> bool:
        """Does `call` (in `module`) call `name` defined at the top of `definer`? Plain names
        are followed through the module's imports; `x.name(...)` matches by name alone."""
        if _called_name(call) != name:
            return False
        if not isinstance(call.func, ast.Name):
            return True
        if module.defines(name):
            return module is definer
        return module.imported_from(name) == definer.name

    def derived(self, module: Module, expr: ast.AST) -> bool:
        if isinstance(expr, ast.Call):
            name = _called_name(expr)
            return name == SETTINGS_CALL or (
                name is not None and self._returns_derived(module, expr, name)
            )
        if isinstance(expr, ast.Dict):  # {**derived, "key": value, ...}
            return any(
                key is None and self.derived(module, value)
                for key, value in zip(expr.keys, expr.values, strict=True)
            )
        if isinstance(expr, ast.Name):
            return self._name_derived(module, expr)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            return self._attribute_derived(module, expr)
        return False

    def _guarded(self, key: tuple[int, str]) -> bool:
        if key in self._busy:
            return True
        self._busy.add(key)
        return False

    def _returns_derived(self, caller: Module, call: ast.Call, function_name: str) -> bool:
        definitions = [
            (module, node)
            for module in self.modules
            for node in module.tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name == function_name
            and self.resolves_to(caller, call, module, function_name)
        ]
        if not definitions or self._guarded((0, f"returns:{function_name}")):
            return False
        try:
            results = [
                self.derived(module, ret.value)
                for module, function in definitions
                for ret in ast.walk(function)
                if isinstance(ret, ast.Return) and ret.value is not None
            ]
        finally:
            self._busy.discard((0, f"returns:{function_name}"))
        return bool(results) and all(results)

    def _name_derived(self, module: Module, name: ast.Name) -> bool:
        for scope in module.enclosing(name):
            if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                values = _assigned(scope, name.id)
                if values:
                    return all(self.derived(module, value) for value in values)
                if name.id in _parameters(scope):
                    return self._parameter_derived(module, scope, name.id)
        values = _assigned(module.tree, name.id)
        return bool(values) and all(self.derived(module, value) for value in values)

    def _attribute_derived(self, module: Module, attribute: ast.Attribute) -> bool:
        """`self.x`: every `self.x = ...` of the enclosing class assigns a derived value."""
        cls = next((s for s in module.enclosing(attribute) if isinstance(s, ast.ClassDef)), None)
        if cls is None:
            return False
        values = [
            node.value
            for node in ast.walk(cls)
            if isinstance(node, ast.Assign | ast.AnnAssign)
            and node.value is not None
            and any(
                isinstance(target, ast.Attribute) and target.attr == attribute.attr
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
        ]
        return bool(values) and all(self.derived(module, value) for value in values)

    def _parameter_derived(self, module: Module, function: ast.AST, parameter: str) -> bool:
        """Every call of the function in the shipped code passes a derived value there."""
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            return False  # a lambda's parameter: its callers are not traceable
        positional = [arg.arg for arg in (*function.args.posonlyargs, *function.args.args)]
        callee = function.name
        if callee == "__init__":
            cls = next(s for s in module.enclosing(function) if isinstance(s, ast.ClassDef))
            callee = cls.name
        # Nested and method definitions are matched by name; top-level ones through imports.
        top_level = function in module.tree.body or callee != function.name
        if positional and positional[0] in ("self", "cls"):
            positional = positional[1:]
        key = (id(function), parameter)
        if self._guarded(key):
            return False
        try:
            passed = [
                (caller_module, _argument(arguments, keywords, positional, parameter))
                for caller_module in self.modules
                for arguments, keywords in self._calls_of(caller_module, module, callee, top_level)
            ]
            return bool(passed) and all(
                argument is not None and self.derived(caller_module, argument)
                for caller_module, argument in passed
            )
        finally:
            self._busy.discard(key)

    def _calls_of(
        self, caller: Module, definer: Module, callee: str, top_level: bool
    ) -> Iterator[tuple[list[ast.expr], list[ast.keyword]]]:
        """(arguments, keywords) of each call of `callee` in `caller`: `callee(a, b)`, and
        `to_thread(callee, a, b)` (or `submit`, `run_in_executor`: a function followed by its
        arguments)."""
        for call in ast.walk(caller.tree):
            if not isinstance(call, ast.Call):
                continue
            direct = (
                self.resolves_to(caller, call, definer, callee)
                if top_level
                else _called_name(call) == callee
            )
            if direct:
                yield call.args, call.keywords
                continue
            for index, argument in enumerate(call.args):
                if isinstance(argument, ast.Name) and argument.id == callee:
                    yield call.args[index + 1 :], call.keywords


def _keyword(call: ast.Call, *names: str) -> ast.expr | None:
    return _keyword_in(call.keywords, *names)


def _keyword_in(keywords: list[ast.keyword], *names: str) -> ast.expr | None:
    return next((kw.value for kw in keywords if kw.arg in names), None)


def _argument(
    arguments: list[ast.expr], keywords: list[ast.keyword], positional: list[str], parameter: str
) -> ast.expr | None:
    if parameter in positional and positional.index(parameter) < len(arguments):
        return arguments[positional.index(parameter)]
    return _keyword_in(keywords, parameter)


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    args = function.args
    return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}


def _assigned(scope: ast.AST, name: str) -> list[ast.expr]:
    """Values assigned to `name` directly in this scope (not in nested functions)."""
    values: list[ast.expr] = []
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                values.append(node.value)
        todo.extend(ast.iter_child_nodes(node))
    return values


def _dotted(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def shipped_modules() -> list[Module]:
    return [
        Module.parse(path, _dotted(root, path))
        for root in SHIPPED
        for path in sorted(root.rglob("*.py"))
        if TEST_SUPPORT not in path.parents
    ]


def site(module: Module, call: ast.Call) -> str:
    return f"{module.path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call)[:90]}"


def test_every_kafka_client_starts_from_the_shared_settings() -> None:
    provenance = Provenance(shipped_modules())
    sites = list(provenance.kafka_client_calls())
    # Producers, consumers, admin clients and transactional producers of all four services.
    assert len(sites) >= 15, [site(m, c) for m, c in sites]
    bypassing = [site(m, c) for m, c in sites if not provenance.configured(m, c)]
    assert not bypassing, "Kafka clients not configured from KafkaSettings.client_config()"


BYPASSES = {
    "a literal": 'Producer({"bootstrap.servers": kafka.bootstrap_servers})',
    "a dict without the settings": 'c = {"bootstrap.servers": b}\nConsumer({**c, "group.id": g})',
    "a parameter one caller fills by hand": """
class Directory:
    def __init__(self, config):
        self._admin = AdminClient(config)
Directory(kafka.client_config())
Directory({"bootstrap.servers": "x:9092"})
""",
    "a builder that forgets the settings in one branch": """
def config(kafka, tls):
    if tls:
        return {**kafka.client_config(), "linger.ms": 5}
    return {"bootstrap.servers": kafka.bootstrap_servers}
Producer(config(kafka, True))
""",
}
CONFIGURED = {
    "the settings": "Producer(kafka.client_config())",
    "a spread": 'Consumer({**kafka.client_config(), "group.id": g})',
    "a closure over a local": """
def build(kafka):
    config = {**kafka.client_config(), "acks": "all"}
    return lambda: Producer({**config, "transactional.id": "t"})
""",
    "an attribute": """
class Outcomes:
    def __init__(self, kafka):
        self._config = {**kafka.client_config(), "group.id": "g"}
    def open(self):
        return Consumer(self._config)
""",
}


def _verdicts(source: str) -> list[bool]:
    module = Module.parse(Path("example.py"), "example", source)
    provenance = Provenance([module])
    return [provenance.configured(m, c) for m, c in provenance.kafka_client_calls()]


@pytest.mark.parametrize("source", BYPASSES.values(), ids=BYPASSES.keys())
def test_the_check_names_a_client_that_bypasses_the_settings(source: str) -> None:
    verdicts = _verdicts(source)
    assert verdicts and not all(verdicts)


@pytest.mark.parametrize("source", CONFIGURED.values(), ids=CONFIGURED.keys())
def test_the_check_accepts_the_ways_the_code_passes_the_settings(source: str) -> None:
    verdicts = _verdicts(source)
    assert verdicts and all(verdicts)


def test_connect_is_the_only_place_a_cassandra_cluster_is_built() -> None:
    builders = [
        site(module, node)
        for module in shipped_modules()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Call) and _called_name(node) == "Cluster"
    ]
    assert [b.split(":")[0] for b in builders] == ["libs/scheduler/store/cassandra.py"], builders


class _RecordingCluster:
    built: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        _RecordingCluster.built.append(kwargs)

    def connect(self, keyspace: str | None = None) -> object:
        return object()


def test_connect_passes_the_tls_context_of_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cassandra_store, "Cluster", _RecordingCluster)
    _RecordingCluster.built.clear()
    cassandra_store.connect(CassandraSettings())
    cassandra_store.connect(CassandraSettings(ssl_enabled=True))
    plain, tls = _RecordingCluster.built
    assert plain["ssl_context"] is None
    context = tls["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_rows_are_the_drivers_named_tuples_with_one_row_type_per_column_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sessions' row factory gives what the driver's default gives (field names cleaned
    the driver's way, a positional fallback for names no identifier can hold), but builds the
    row type once per column list, not once per result."""
    monkeypatch.setattr(cassandra_store, "Cluster", _RecordingCluster)
    _RecordingCluster.built.clear()
    cassandra_store.connect(CassandraSettings())
    [built] = _RecordingCluster.built
    factory = built["execution_profiles"][EXEC_PROFILE_DEFAULT].row_factory
    assert factory is cassandra_store.named_rows
    for columns in (["message_id", "status_written"], ["system.count(*)"], ["a", "a", "[json]"]):
        rows = [tuple(range(len(columns))), tuple(range(10, 10 + len(columns)))]
        ours, drivers = factory(columns, rows), named_tuple_factory(columns, rows)
        assert ours == drivers and ours[0]._fields == drivers[0]._fields, columns
        again = factory(list(columns), rows)
        assert type(again[0]) is type(ours[0])
    assert factory(["message_id"], [("m1",)])[0].message_id == "m1"
