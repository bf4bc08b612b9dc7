"""The study file: claims, their arms, metrics and expected relations, and the budgets they run at.

A study file is YAML validated by `StudyFile` (unknown keys and bad values are one `UserInputError`
naming the key; `StudyFile.model_json_schema()` is its JSON schema). Layout:

- `name`, `title`, `description`; `config` (a config file, relative to the study file) and/or
  `base` (a config mapping, sections nested as in a config file, merged over `config`): the
  experiment every run starts from;
- `budgets`: by name (`quick`, `full`, ...), the `seeds` of each arm, overrides `set` for every
  run, and `max_minutes`, a bound on the estimated time (a plan over it is refused);
- `claims`: each with an `id`, the `statement`, its `source` in the notes, overrides `set` for all
  its arms, `arms` (name -> overrides; an arm may `select` keys, below), the `metric`, what it
  `expect`s (relations between arms, or of an arm to a value), and optionally its own `seeds`,
  per-budget `budgets` overrides and the `diverged_value` a diverged run counts as;
- `analysis`: how relations between two arms are analysed, `paired` (the default: seed-matched
  differences) or `welch`; a relation's own `analysis` overrides it. Chosen in the file, before any
  run (`nnrun.study.stats`).

Overrides are dotted keys, as `--set` takes them: `{optim.lr: 0.001, model.hidden: [64]}`.
A run's config is, in this order: `config`, `base`, the budget's `set`, the command line's
`--set`, the claim's `set`, the claim's `budgets.NAME.set`, the arm's overrides, the selected
values, and the seed: `S`, `S + 1`, ... with `S` the base config's `seed`, or the `seed` the claim or
the arm sets (an arm with its own seeds can only be compared by a `welch` relation).

`select` (on a claim; under one of its `budgets`, where it replaces the claim's for that budget; or on an
arm, where it replaces both) runs every combination of the listed values and keeps, per arm and seed, the
run with the best validation metric (`select_by`, default the loss's validation metric: `val_accuracy`,
`val_rmse`): the values are chosen on the validation split, as cross-validation would, and the test metrics
of the chosen run are reported.
A selection may instead be a search (`{search: tpe, trials: 20, optim.lr: "loguniform(1e-4, 1e-1)"}`,
`SearchSelect`): Optuna's sampler runs that many trials per arm and seed over the distributions (or lists)
given, and they are the candidates.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nnrun.compose import compose_file
from nnrun.config import read_yaml_mapping, section_at
from nnrun.errors import UserInputError, shorten
from nnrun.study.stats import ANALYSES, DEFAULT_ANALYSIS, ONE_SAMPLE
from nnrun.sweep.search import SAMPLERS
from nnrun.sweep.space import Distribution, parse_distribution

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
"""Claim ids, arm and budget names: letters, digits and `_ . + -`, not starting with a sign or dot."""
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"
"""A dotted config key."""
SELECT_KEY = "select"
"""The key of an arm's mapping that holds its selection grid instead of an override."""
SEARCH_KEY, TRIALS_KEY = "search", "trials"
"""The keys of a selection that searches (`search: tpe`, `trials: N`) instead of running a grid."""
RELATIONS = ("greater", "less", "about_equal", "at_least", "at_most", "diverges")
"""What a claim can expect of arm a: greater or less than b (or a value); about equal within a margin; at
least or at most b within a margin (non-inferior, non-superior); diverges (more often than b, or without b in
more than half its runs)."""
MARGIN_RELATIONS = ("about_equal", "at_least", "at_most")
"""Relations that need a margin."""
MAX_SEEDS = 1000
MAX_SELECT = 1000
"""Most seeds of an arm, and most candidate runs a selection grid may make."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=60)]
Overrides = dict[Annotated[str, Field(pattern=KEY_PATTERN, max_length=200)], Any]


class Section(BaseModel):
    """A section of the study file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Expectation(Section):
    """One relation a claim expects, between arm `a` and arm `b` (or a fixed `value`)."""

    a: Name = Field(description="The arm the relation is about.")
    relation: Literal[RELATIONS] = Field(  # type: ignore[valid-type]
        description="greater / less: a's mean is above / below b's; about_equal: within +-margin of it; "
                    "at_least: not below it by more than margin; at_most: not above it by more than margin; "
                    "diverges: a's runs diverge more often than b's (Fisher's exact test), or without b, in more "
                    "than half of them (exact binomial test).")
    b: Name | None = Field(None, description="The arm a is compared with (or give value).")
    value: float | None = Field(None, description="A fixed value a is compared with instead of an arm.")
    margin: float | None = Field(
        None, gt=0, description="about_equal, at_least, at_most: the difference that still counts as none, "
                                "in the metric's units.")
    metric: str | None = Field(None, max_length=200, description="The metric of this relation (default: the "
                                                                 "claim's).")
    analysis: Literal[ANALYSES] | None = Field(  # type: ignore[valid-type]
        None, description="Between two arms: paired (seed-matched differences; the arms must run at the same "
                          "seeds) or welch (independent samples). Default: the study's analysis.")

    @model_validator(mode="after")
    def _consistent(self) -> Expectation:
        if self.relation == "diverges":
            if (self.value is not None or self.margin is not None or self.metric is not None
                    or self.analysis is not None):
                raise ValueError("relation diverges takes a (and optionally b) only: it counts diverged runs with "
                                 "an exact test, so value, margin, metric and analysis do not apply")
        else:
            if (self.b is None) == (self.value is None):
                raise ValueError(f"relation {self.relation} needs exactly one of b (an arm) or value (a number)")
            if self.relation in MARGIN_RELATIONS and self.margin is None:
                raise ValueError(f"relation {self.relation} needs a margin (the difference that counts as none)")
            if self.relation not in MARGIN_RELATIONS and self.margin is not None:
                raise ValueError(f"relation {self.relation} takes no margin (only {', '.join(MARGIN_RELATIONS)} do)")
            if self.value is not None and self.analysis is not None:
                raise ValueError("analysis (paired or welch) is for a relation between two arms; against a value "
                                 "the interval is the one-sample t interval")
        if self.b is not None and self.b == self.a:
            raise ValueError(f"a and b are the same arm ({self.a})")
        return self

    def label(self) -> str:
        """`a > b`, `a ~ b (±0.02)`, `a >= 0.1 - 0.01`, `a diverges, b does not`: the relation in short."""
        if self.relation == "diverges":  # before `other`: a diverges relation may have neither b nor a value
            return f"{self.a} diverges" + (f" more often than {self.b}" if self.b else "")
        other = self.b if self.b is not None else f"{self.value:g}"
        symbol = {"greater": ">", "less": "<", "about_equal": "~", "at_least": ">=", "at_most": "<="}[self.relation]
        if self.margin is None:
            return f"{self.a} {symbol} {other}"
        margin = {"about_equal": f" (±{self.margin:g})", "at_least": f" - {self.margin:g}",
                  "at_most": f" + {self.margin:g}"}[self.relation]
        return f"{self.a} {symbol} {other}{margin}"


class Budget(Section):
    """How much a study runs: seeds per arm, overrides for every run, and a bound on the estimated time."""

    description: str = Field("", max_length=2000, description="What this budget is for (shown in the report).")
    seeds: int = Field(ge=2, le=MAX_SEEDS, description="Seeds per arm (claims may set their own).")
    set: Overrides = Field(default_factory=dict, description="Overrides applied to every run (dotted keys).")
    max_minutes: float | None = Field(
        None, gt=0, description="Refuse to start when the estimated time of what is left to run exceeds this.")
    claims: list[Name] | None = Field(
        None, min_length=1, description="The claims this budget measures (default: every claim), e.g. a "
                                        "replication on fresh seeds of the claims another budget left unresolved.")


class ClaimBudget(Section):
    """A claim's own settings under one budget."""

    seeds: int | None = Field(None, ge=2, le=MAX_SEEDS, description="Seeds per arm of this claim in this budget.")
    set: Overrides = Field(default_factory=dict, description="Overrides for this claim's runs in this budget.")
    select: dict[str, Any] | None = Field(
        None, description="The claim's selection in this budget, replacing its select (a grid drawn for "
                          "another budget's data and epochs); an arm's own select still replaces it.")

    @field_validator("select")
    @classmethod
    def _select(cls, select: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if select is None else _check_select(select, "select")


@dataclass(frozen=True)
class SearchSelect:
    """A selection by an Optuna search (`nnrun.sweep.search`): `sampler` (tpe, cmaes, random) runs `trials` trials
    per arm and seed over `space`, each key a distribution as `--space` writes it (`loguniform(1e-4, 1e-1)`) or
    a list of values to choose from."""

    sampler: str
    trials: int
    space: dict[str, Any]

    def distributions(self) -> dict[str, Distribution]:
        """The space as `nnrun.sweep.space` distributions (a list is a `choice` of its values)."""
        return {key: Distribution("choice", tuple(v)) if isinstance(v, list) else parse_distribution(v)
                for key, v in self.space.items()}

    def report(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "trials": self.trials,
                "space": {k: str(d) for k, d in self.distributions().items()}}


@dataclass(frozen=True)
class Arm:
    """One arm of a claim: its overrides (dotted keys) and the keys it selects on the validation split: a grid
    (`select`, every combination runs) or a search (`search`; `select` is then empty)."""

    overrides: dict[str, Any]
    select: dict[str, list[Any]]
    search: SearchSelect | None = None

    @property
    def selected_keys(self) -> list[str]:
        """The keys the selection chooses (the grid's or the search space's)."""
        return list(self.search.space) if self.search is not None else list(self.select)


def _check_search(select: dict[str, Any], where: str) -> dict[str, Any]:
    """A search selection `{search: SAMPLER, trials: N, dotted key: distribution text or [values], ...}`, or a
    ValueError naming the key."""
    sampler, trials = select[SEARCH_KEY], select.get(TRIALS_KEY)
    if sampler not in SAMPLERS:
        raise ValueError(f"{where}.{SEARCH_KEY}: unknown sampler {shorten(repr(sampler))}; allowed: "
                         f"{', '.join(SAMPLERS)}")
    if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= MAX_SELECT:
        raise ValueError(f"{where}.{TRIALS_KEY}: a search needs its number of trials, 1 to {MAX_SELECT} (got "
                         f"{shorten(repr(trials))})")
    space = {k: v for k, v in select.items() if k not in (SEARCH_KEY, TRIALS_KEY)}
    if not space:
        raise ValueError(f"{where}: a search needs keys to search, e.g. optim.lr: loguniform(1e-4, 1e-1)")
    for key, value in space.items():
        if not isinstance(key, str) or not _is_key(key):
            raise ValueError(f"{where}: {shorten(repr(key))} is not a dotted config key")
        if isinstance(value, list):
            if not value:
                raise ValueError(f"{where}.{key} must be a non-empty list of values or a distribution")
            continue
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key} must be a distribution such as loguniform(1e-4, 1e-1) or a list of "
                             f"values, got {shorten(repr(value))}")
        try:
            parse_distribution(value)
        except UserInputError as e:
            raise ValueError(f"{where}.{key}: {e}") from None
    return select


def search_of(select: dict[str, Any]) -> SearchSelect | None:
    """The search a checked selection describes, or None for a grid."""
    if SEARCH_KEY not in select:
        return None
    return SearchSelect(select[SEARCH_KEY], select[TRIALS_KEY],
                        {k: v for k, v in select.items() if k not in (SEARCH_KEY, TRIALS_KEY)})


def _check_select(select: Any, where: str) -> dict[str, list[Any]]:
    """A selection grid `{dotted key: [values]}` (each list non-empty, values distinct) or search (`_check_search`),
    or a ValueError."""
    if not isinstance(select, dict):
        raise ValueError(f"{where} must map dotted keys to lists of values, got {shorten(repr(select))}")
    if SEARCH_KEY in select:
        return _check_search(select, where)
    if TRIALS_KEY in select:
        raise ValueError(f"{where}.{TRIALS_KEY}: trials is the number of trials of a search; give search: "
                         f"{'|'.join(SAMPLERS)} with it")
    size = 1
    for key, values in select.items():
        if not isinstance(key, str) or not _is_key(key):
            raise ValueError(f"{where}: {shorten(repr(key))} is not a dotted config key")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{key} must be a non-empty list of values, got {shorten(repr(values))}")
        if any(values.count(v) > 1 for v in values):
            raise ValueError(f"{where}.{key} lists a value twice: {shorten(repr(values))}")
        size *= len(values)
    if size > MAX_SELECT:
        raise ValueError(f"{where} makes {size} candidate runs per arm and seed (at most {MAX_SELECT})")
    return select


def _is_key(text: str) -> bool:
    return re.match(KEY_PATTERN, text) is not None and len(text) <= 200


class Claim(Section):
    """One statement of the notes and how it is measured."""

    id: Name = Field(description="Short name of the claim (letters, digits, _ . + -).")
    statement: str = Field(min_length=1, max_length=2000, description="The statement, in a short paraphrase.")
    source: str | None = Field(None, max_length=500, description="Where it is made (section of the notes).")
    metric: str = Field(max_length=200, description="The metric the relations compare (a summary key such as "
                                                   "test_accuracy, last./min./max. of a metrics.jsonl key, or a "
                                                   "derived one; see docs/study.md).")
    set: Overrides = Field(default_factory=dict, description="Overrides shared by every arm of this claim.")
    arms: dict[Name, dict[str, Any]] = Field(
        description="Arm name -> overrides (dotted keys); the key select holds a selection grid.")
    select: dict[str, Any] = Field(
        default_factory=dict, description="Keys chosen per arm and seed on the validation split: lists of values, "
                                          "every combination runs, the best by select_by is kept; or search: "
                                          "tpe|cmaes|random with trials: N and each key a distribution "
                                          "(loguniform(1e-4, 1e-1)) or a list, Optuna choosing the trials.")
    select_by: str | None = Field(None, max_length=200, description="The validation metric of the selection "
                                                                    "(default val_accuracy or val_rmse).")
    expect: list[Expectation] = Field(min_length=1, description="The relations the claim expects.")
    seeds: int | None = Field(None, ge=2, le=MAX_SEEDS, description="Seeds per arm (default: the budget's).")
    budgets: dict[Name, ClaimBudget] = Field(default_factory=dict,
                                             description="Settings of this claim under a given budget.")
    diverged_value: float | None = Field(
        None, description="The metric value a diverged run counts as (e.g. chance accuracy); default: diverged "
                          "runs are left out of the means and counted apart.")
    note: str | None = Field(None, max_length=4000, description="A remark shown with the claim in the report.")

    @field_validator("arms")
    @classmethod
    def _arms(cls, arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(arms) < 2:
            raise ValueError(f"a claim needs at least two arms to compare, got {len(arms)}")
        for name, overrides in arms.items():
            if overrides is None:
                arms[name] = {}
                continue
            if not isinstance(overrides, dict):
                raise ValueError(f"arm {name} must be a mapping of dotted keys to values, got "
                                 f"{shorten(repr(overrides))}")
            for key in overrides:
                if key != SELECT_KEY and (not isinstance(key, str) or not _is_key(key)):
                    raise ValueError(f"arm {name}: {shorten(repr(key))} is not a dotted config key")
            if SELECT_KEY in overrides:
                _check_select(overrides[SELECT_KEY], f"arm {name}: select")
        return arms

    @field_validator("select")
    @classmethod
    def _select(cls, select: dict[str, Any]) -> dict[str, Any]:
        return _check_select(select, "select")

    @model_validator(mode="after")
    def _expectations_name_arms(self) -> Claim:
        for i, e in enumerate(self.expect):
            for role, arm in (("a", e.a), ("b", e.b)):
                if arm is not None and arm not in self.arms:
                    raise ValueError(f"expect.{i}.{role}: no arm named {arm}; arms: {', '.join(self.arms)}")
        return self

    def arm(self, name: str, budget: str) -> Arm:
        """Arm `name`'s overrides and its selection under `budget`, a grid or a search: the arm's own `select`,
        else the claim's `budgets.BUDGET.select`, else the claim's `select`."""
        overrides = dict(self.arms[name])
        own = overrides.pop(SELECT_KEY, None)
        in_budget = self.budgets.get(budget)
        claim_select = self.select if in_budget is None or in_budget.select is None else in_budget.select
        select = claim_select if own is None else own
        search = search_of(select)
        return Arm(overrides, {} if search is not None else select, search)

    def metrics(self) -> list[str]:
        """Every metric this claim reads: its own and its relations' (the diverges ones need none)."""
        names = [self.metric] + [e.metric for e in self.expect if e.metric]
        return list(dict.fromkeys(names))


class StudyFile(Section):
    """A study: the base experiment, the budgets, and the claims."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$", max_length=60,
                      description="Name of the study; names its output folder.")
    title: str = Field("", max_length=500, description="Title of the report.")
    description: str = Field("", max_length=10_000, description="What the study is about (the report's "
                                                                "introduction, Markdown).")
    config: str | None = Field(None, max_length=4096, description="A config file every run starts from "
                                                                  "(relative to the study file).")
    base: dict[str, Any] = Field(default_factory=dict, description="A config mapping (nested sections) merged "
                                                                   "over config.")
    budgets: dict[Name, Budget] = Field(min_length=1, description="Budget name -> seeds, overrides and bound.")
    default_budget: Name | None = Field(None, description="The budget used without --budget (default: the "
                                                          "first).")
    claims: list[Claim] = Field(min_length=1, description="The claims.")
    analysis: Literal[ANALYSES] = Field(  # type: ignore[valid-type]
        DEFAULT_ANALYSIS, description="How relations between two arms are analysed unless they say otherwise: "
                                      "paired (seed-matched differences) or welch (independent samples).")

    @model_validator(mode="after")
    def _names(self) -> StudyFile:
        ids = [c.id for c in self.claims]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"claim ids must be unique; repeated: {', '.join(repeated)}")
        if self.default_budget is not None and self.default_budget not in self.budgets:
            raise ValueError(f"default_budget: no budget named {self.default_budget}; budgets: "
                             f"{', '.join(self.budgets)}")
        for name, budget in self.budgets.items():
            unknown = [i for i in budget.claims or [] if i not in ids]
            if unknown:
                raise ValueError(f"budgets.{name}.claims: {', '.join(unknown)} names no claim of the study")
        for claim in self.claims:
            unknown = [b for b in claim.budgets if b not in self.budgets]
            if unknown:
                raise ValueError(f"claim {claim.id}: budgets.{unknown[0]} names no budget of the study; budgets: "
                                 f"{', '.join(self.budgets)}")
        return self

    def analysis_of(self, e: Expectation) -> str | None:
        """How relation `e` is analysed: its own `analysis`, else the study's; `one-sample` against a value;
        None for `diverges` (an exact test of counts)."""
        if e.relation == "diverges":
            return None
        if e.b is None:
            return ONE_SAMPLE
        return e.analysis or self.analysis

    def budget_name(self, budget: str | None) -> str:
        """`budget`, checked, or the default one."""
        if budget is None:
            return self.default_budget or next(iter(self.budgets))
        if budget not in self.budgets:
            raise UserInputError(f"--budget {budget}: the study has the budgets {', '.join(self.budgets)}")
        return budget


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_study(path: str | Path) -> tuple[StudyFile, dict[str, Any]]:
    """Read and validate the study file at `path`; returns it and its base config mapping (`config` read
    relative to the study file and composed with its `defaults`, `base` merged over it). Problems are one
    `UserInputError` naming the keys."""
    path = Path(path)
    raw = read_yaml_mapping(path, what="study file")
    study = validate_study(raw, source=str(path))
    base: dict[str, Any] = {}
    if study.config is not None:
        config_path = (path.parent / study.config) if not Path(study.config).is_absolute() else Path(study.config)
        base = compose_file(config_path, what=f"config file (config: in {path})").raw  # its defaults merged
    return study, merge(base, study.base)


def validate_study(raw: dict[str, Any], source: str = "study file") -> StudyFile:
    """Validate a raw mapping into a `StudyFile`, or raise one `UserInputError` with a line per problem."""
    try:
        return StudyFile.model_validate(raw)
    except ValidationError as e:
        lines = [f"invalid study ({source}):"]
        for err in e.errors()[:20]:
            lines.append("  " + _describe(err))
        raise UserInputError("\n".join(lines)) from None


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        section = section_at(err["loc"][:-1], StudyFile)
        allowed = f"; allowed keys here: {', '.join(section.model_fields)}" if section else ""
        return f"{loc}: unknown key{allowed}"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":
        return f"{loc}: {message}" if err["loc"] else message
    return f"{loc}: {message} (got {shorten(repr(err.get('input')))})"


def seeds_of(study: StudyFile, claim: Claim, budget: str, base_seed: int) -> list[int]:
    """The seeds of `claim`'s arms under `budget`: `base_seed`, `base_seed + 1`, ... (the claim's budget
    setting, else its own `seeds`, else the budget's)."""
    own = claim.budgets.get(budget)
    n = (own.seeds if own is not None and own.seeds is not None else None) or claim.seeds \
        or study.budgets[budget].seeds
    return [base_seed + i for i in range(n)]

