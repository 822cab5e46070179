"""What a routing config change would do to traffic: the preview for config pull requests.

:func:`preview` compares two configs model by model: each version's old and new
share of unpinned traffic, the fraction of a fixed, deterministic sample of
routing keys whose sticky version would change (with from -> to counts), the
minimum fraction any scheme would have to move for comparison, and changes to
the shadow, the stable version, labels and the sticky key. :func:`render` turns
it into a Markdown report that reads well in a terminal, a pull-request comment
or a GitHub step summary. :func:`check_report` is the whole ``waybill routing
check`` command as a pure function: texts in, verdict and report out; the CLI
only reads files, runs ``git show`` and discovers the registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from models.naming import semver_key
from router.config import (
    ModelConfig,
    RoutingConfig,
    RoutingConfigError,
    check_against_registry,
    content_hash,
    parse_routing,
)
from router.sticky import Rendezvous

DEFAULT_SAMPLE = 100_000

# Per model, the tables of the file that other owners parse (alert rules): compared as
# values, never read, so that a change to them alone still shows as a change.
OtherTables = Mapping[str, Mapping[str, object]]
Parsed = tuple[RoutingConfig, OtherTables]


def parse_routes(text: str, source: str) -> Parsed:
    """A file that holds only routes."""
    return parse_routing(text, source), {}


@dataclass(frozen=True, slots=True)
class VersionShare:
    version: str
    old_share: float  # fraction of unpinned traffic, 0..1 (0 when not routed)
    new_share: float
    old_label: str | None
    new_label: str | None


@dataclass(frozen=True, slots=True)
class Movement:
    source: str  # the version sampled keys leave
    target: str  # the version they reach
    keys: int


@dataclass(frozen=True, slots=True)
class ShadowSetting:
    version: str
    fraction: float


@dataclass(frozen=True, slots=True)
class ModelPreview:
    model: str
    status: str  # "added", "removed", "changed" or "unchanged"
    shares: tuple[VersionShare, ...]  # every version routed or labelled in either config
    sampled_keys: int  # keys compared (0 when the model is added or removed)
    moved_keys: int  # sampled keys whose sticky version changes
    ideal_fraction: float  # the least any assignment must move: sum of share increases
    movements: tuple[Movement, ...]  # from -> to counts, largest first
    old_shadow: ShadowSetting | None
    new_shadow: ShadowSetting | None
    notes: tuple[str, ...]  # stable, label and sticky-key changes, in words

    @property
    def moved_fraction(self) -> float:
        return self.moved_keys / self.sampled_keys if self.sampled_keys else 0.0

    @property
    def shadow_changed(self) -> bool:
        return self.old_shadow != self.new_shadow


@dataclass(frozen=True, slots=True)
class Preview:
    models: tuple[ModelPreview, ...]
    keys: int

    def model(self, name: str) -> ModelPreview:
        for entry in self.models:
            if entry.model == name:
                return entry
        raise KeyError(name)


def sample_keys(count: int) -> list[str]:
    """The deterministic routing keys every preview uses (same keys, same answer)."""
    return [f"preview-key-{i}" for i in range(count)]


def _shadow(model: ModelConfig | None) -> ShadowSetting | None:
    if model is None or model.shadow is None:
        return None
    return ShadowSetting(model.shadow.version, model.shadow.fraction)


def _weights(model: ModelConfig) -> tuple[tuple[str, int], ...]:
    return tuple((r.version, r.weight) for r in model.routes)


def _label_of(model: ModelConfig | None, version: str) -> str | None:
    if model is None:
        return None
    return next((r.label for r in model.routes if r.version == version), None)


def _notes(name: str, old: ModelConfig | None, new: ModelConfig | None) -> list[str]:
    if old is None or new is None:
        return []
    notes = []
    if old.stable != new.stable:
        notes.append(f"stable changes from {old.stable} to {new.stable}: rollbacks now send "
                     f"traffic to {new.stable}, and the stable label follows it")
    if old.sticky_key != new.sticky_key:
        notes.append(f"sticky_key changes from {old.sticky_key} to {new.sticky_key}: callers "
                     "are keyed by a different value, so their assignments are drawn afresh "
                     "(the key counts below assume the same key values)")
    old_labels, new_labels = old.labels(), new.labels()
    for label in sorted(old_labels.keys() | new_labels.keys()):
        before, after = old_labels.get(label), new_labels.get(label)
        if before != after:
            notes.append(f"label {label!r}: {before or '(none)'} -> {after or '(none)'}"
                         + (" (pins of this label change version)" if before and after else ""))
    return notes


def _model_preview(
    name: str, old: ModelConfig | None, new: ModelConfig | None, keys: list[str],
    old_tables: Mapping[str, object], new_tables: Mapping[str, object],
) -> ModelPreview:
    old_w = dict(_weights(old)) if old else {}
    new_w = dict(_weights(new)) if new else {}
    versions = sorted(old_w.keys() | new_w.keys(), key=semver_key)
    shares = tuple(
        VersionShare(v, old_w.get(v, 0) / 100, new_w.get(v, 0) / 100,
                     _label_of(old, v), _label_of(new, v))
        for v in versions
    )
    ideal = sum(max(0, new_w.get(v, 0) - old_w.get(v, 0)) for v in versions) / 100
    counts: Counter[tuple[str, str]] = Counter()
    sampled = 0
    if old is not None and new is not None:
        sampled = len(keys)
        before = {(v, w) for v, w in old_w.items() if w > 0}
        after = {(v, w) for v, w in new_w.items() if w > 0}
        if before != after:  # the same positive weights assign every key the same way
            old_choice = Rendezvous(name, _weights(old)).choose
            new_choice = Rendezvous(name, _weights(new)).choose
            for key in keys:
                source, target = old_choice(key), new_choice(key)
                if source != target:
                    counts[(source, target)] += 1
    movements = tuple(
        Movement(s, t, n)
        for (s, t), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    )
    edited = sorted(k for k in old_tables.keys() | new_tables.keys()
                    if old is not None and new is not None
                    and old_tables.get(k) != new_tables.get(k))
    if old is None:
        status = "added"
    elif new is None:
        status = "removed"
    else:
        status = "unchanged" if old == new and not edited else "changed"
    return ModelPreview(
        model=name, status=status, shares=shares, sampled_keys=sampled,
        moved_keys=sum(counts.values()), ideal_fraction=ideal, movements=movements,
        old_shadow=_shadow(old), new_shadow=_shadow(new),
        notes=(*_notes(name, old, new), *(f"`{key}` changed" for key in edited)),
    )


def preview(
    old: RoutingConfig | None, new: RoutingConfig, keys: int = DEFAULT_SAMPLE,
    old_tables: OtherTables | None = None, new_tables: OtherTables | None = None,
) -> Preview:
    """Compare ``new`` with ``old`` (None: a new file) over ``keys`` sampled routing keys;
    ``*_tables`` are the other owners' tables of each file, per model."""
    if keys < 1:
        raise ValueError(f"keys must be at least 1, not {keys}")
    sample = sample_keys(keys)
    old_models: Mapping[str, ModelConfig] = old.models if old is not None else {}
    names = sorted(old_models.keys() | new.models.keys())
    return Preview(
        tuple(_model_preview(n, old_models.get(n), new.models.get(n), sample,
                             (old_tables or {}).get(n, {}), (new_tables or {}).get(n, {}))
              for n in names),
        keys,
    )


# ---- rendering -----------------------------------------------------------------------------


def _pct(fraction: float) -> str:
    text = f"{fraction * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _pp(delta: float) -> str:
    points = round(delta * 100, 2)
    if points == 0:
        return "0"
    text = f"{abs(points):.2f}".rstrip("0").rstrip(".")
    return f"{'+' if points > 0 else '-'}{text} pp"


def _shadow_text(shadow: ShadowSetting | None) -> str:
    return "none" if shadow is None else f"{shadow.version} at {_pct(shadow.fraction)}"


def _label_text(share: VersionShare, status: str) -> str:
    if status == "removed":
        return share.old_label or ""
    if status == "added" or share.old_label == share.new_label:
        return share.new_label or ""
    return f"{share.old_label or '-'} -> {share.new_label or '-'}"


def _render_model(entry: ModelPreview) -> list[str]:
    lines = [f"#### {entry.model}: {entry.status}", ""]
    lines += ["| version | label | old share | new share | change |",
              "|---|---|---:|---:|---:|"]
    for s in entry.shares:
        lines.append(f"| {s.version} | {_label_text(s, entry.status)} | {_pct(s.old_share)} | "
                     f"{_pct(s.new_share)} | {_pp(s.new_share - s.old_share)} |")
    lines.append("")
    if entry.sampled_keys:
        lines.append(
            f"Routing keys that change version: **{_pct(entry.moved_fraction)}** of "
            f"{entry.sampled_keys:,} sampled keys (least possible: {_pct(entry.ideal_fraction)})."
        )
        if entry.movements:
            lines += ["", "| from | to | keys | share |", "|---|---|---:|---:|"]
            lines += [f"| {m.source} | {m.target} | {m.keys:,} | "
                      f"{_pct(m.keys / entry.sampled_keys)} |" for m in entry.movements]
    elif entry.status == "added":
        lines.append("New model: all of its traffic follows the new shares.")
    else:
        lines.append("Removed from the config: this file no longer routes the model.")
    if entry.shadow_changed:
        lines += ["", f"Shadow: {_shadow_text(entry.old_shadow)} -> "
                      f"{_shadow_text(entry.new_shadow)}"]
    elif entry.new_shadow is not None:
        lines += ["", f"Shadow (unchanged): {_shadow_text(entry.new_shadow)}"]
    if entry.notes:
        lines += [""] + [f"- {note}" for note in entry.notes]
    lines.append("")
    return lines


def render(result: Preview) -> str:
    """A Markdown report: one section per model, with a shares table and movements."""
    lines: list[str] = []
    for entry in result.models:
        lines += _render_model(entry)
    return "\n".join(lines).rstrip() + "\n"


def check_report(
    new_text: str,
    new_source: str,
    old_text: str | None,
    available: Mapping[str, Collection[str]],
    *,
    old_source: str | None = None,
    failed: Mapping[str, Mapping[str, str]] | None = None,
    keys: int = DEFAULT_SAMPLE,
    parse: Callable[[str, str], Parsed] = parse_routes,
) -> tuple[bool, str]:
    """Validate ``new_text`` against the registry and preview it against ``old_text``.

    ``available`` maps model -> versions in the registry; ``failed`` maps model ->
    version -> why it failed to load (when the caller tried). ``old_text`` None
    means there is nothing to compare with (a new file). Returns ``(ok, report)``;
    ``ok`` is False when the new config does not parse or names unusable versions.
    A previous config that does not parse is reported and treated as absent. ``parse``
    reads a file: its routes and the other owners' tables (the server's reads and checks
    the alert rules too).
    """
    lines = [f"### waybill routing check: {new_source}", ""]
    try:
        new, new_tables = parse(new_text, new_source)
    except RoutingConfigError as err:
        lines.append(f"Result: **invalid**, {len(err.problems)} problem"
                     f"{'s' if len(err.problems) != 1 else ''}:")
        lines += [""] + [f"- `{p}`" for p in err.problems]
        return False, "\n".join(lines) + "\n"
    problems = check_against_registry(new, available, failed)
    digest = content_hash(new_text)[:12]
    if problems:
        lines.append(f"Result: **invalid** (sha256 {digest}), {len(problems)} problem"
                     f"{'s' if len(problems) != 1 else ''}:")
        lines += [""] + [f"- `{p}`" for p in problems]
    else:
        lines.append(f"Result: **valid** (sha256 {digest})")
    old: RoutingConfig | None = None
    old_tables: OtherTables = {}
    label = old_source or "the previous config"
    if old_text is None:
        lines += ["", "Compared with: nothing (a new routing file)"]
    else:
        try:
            old, old_tables = parse(old_text, label)
            lines += ["", f"Compared with: {label}"]
        except RoutingConfigError as err:
            lines += ["", f"Compared with: nothing; {label} does not parse "
                          f"({len(err.problems)} problems), so every share is shown as new"]
    lines += ["", render(preview(old, new, keys, old_tables, new_tables))]
    return not problems, "\n".join(lines).rstrip() + "\n"
