"""The query helpers and their parameters, declared once.

Each :class:`Helper` names a function of query/api.py and describes its parameters
(:class:`Param`: name, type, default, help, CLI flag, dashboard label and widget). The
``featuregraph query`` subcommands are generated from this table (query/cli.py), and the
dashboard's filter forms take their labels, help, defaults and bounds from it
(dashboard/forms.py), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from featuregraph.query import api
from featuregraph.query.rows import Rows, with_cut
from featuregraph.store.db import Database, QueryLimits


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # a parameter without a default: a positional CLI argument


@dataclass(frozen=True)
class Param:
    """One parameter of a query helper.

    ``name`` is the keyword of the api function; ``flag`` the CLI option (None: a positional
    argument, for a ``REQUIRED`` one). ``optional``: None is a valid value ("any"). ``widget``
    is how a dashboard form asks for it: ``slider``, ``number``, ``text`` or ``select`` (its
    options come from the data); ``form_default`` is the form's starting value where a page
    needs another than the CLI (None: ``default``).
    """

    name: str
    type: type
    help: str
    default: Any = REQUIRED
    flag: str | None = None
    optional: bool = False
    label: str = ""
    widget: str = "number"
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    form_default: Any = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def start(self) -> Any:
        """The value a dashboard form starts from."""
        return self.default if self.form_default is None else self.form_default


@dataclass(frozen=True)
class Helper:
    """A query helper: the CLI subcommand ``command`` runs ``api.<function>`` with ``params``."""

    command: str
    function: str
    summary: str
    params: tuple[Param, ...] = field(default_factory=tuple)

    @property
    def fn(self) -> Callable[..., Any]:
        return getattr(api, self.function)

    def param(self, name: str) -> Param:
        """The parameter called ``name`` (KeyError if there is none)."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.command} has no parameter {name!r}")

    def run(self, db: Database, limits: QueryLimits | None = None, **kwargs: Any) -> Rows:
        """Run the helper: its frame, and how the row cap cut it."""
        frame, cut = with_cut(self.fn, db, limits=limits, **kwargs)
        return Rows(frame, cut)


# Parameters several helpers share.
RUN = Param("run", int, "Run id (default: every run; results carry run_id).", None, "--run", optional=True)
FEATURE = Param(
    "feature", str, "Feature as LAYER.FEATURE (residual) or LAYER.SITE.FEATURE (SITE att, mlp or tc), e.g. 5.10603, 5.att.12.",
    label="Feature (LAYER.FEATURE or LAYER.SITE.FEATURE)", widget="text"
)
TAG = Param(
    "tag",
    str,
    "Only prompts with this tag.",
    None,
    "--tag",
    optional=True,
    label="Prompt tag",
    widget="select",
)
SIGN_HELP = "Sign pattern, one of + - * per edge"


def _min_weight(help: str, label: str) -> Param:
    return Param("min_weight", float, help, 0.0, "--min-weight", label=label, minimum=0.0, step=0.001)


# The strength filters of the path searches (docs/sql.md, recurring_paths). The CLI and the
# dashboard start from a relative-weight filter; the SQL macros and query.api default to 0.
STRENGTH = (
    Param("min_rel_weight", float,
          f"Count an edge only where |weight| >= this x the largest |weight| of the same ablation "
          f"(default {api.RECOMMENDED_MIN_REL_WEIGHT}: a tenth of the ablated feature's strongest effect; weaker "
          f"edges are side effects, and paths of them rank high on support alone; 0 counts every edge).",
          api.RECOMMENDED_MIN_REL_WEIGHT, "--min-rel-weight", label="Minimum |weight| / ablation's largest",
          minimum=0.0, maximum=1.0, step=0.05),
    Param("max_p", float,
          "Count an edge only where its p-value against the noise experiment is below this (an edge whose "
          "feature has no noise null is dropped); default: no significance filter.",
          None, "--max-p", optional=True, label="p-value below", widget="select"),
    Param("experiment", int, "Noise experiment for --max-p (default: the run's latest complete one).",
          None, "--experiment", optional=True, label="Noise experiment (any: the latest)", widget="select"),
)  # fmt: skip
P_VALUE_CHOICES = (0.05, 0.01, 0.001)  # what the dashboard offers for max_p


# fmt: off
HELPERS: dict[str, Helper] = {
    h.command: h
    for h in (
        Helper(
            "prompt-graph",
            "prompt_graph",
            "One prompt's graph, pruned the seed's way (top-k per ablated feature, then long paths).",
            (
                Param("prompt", int, "Prompt id (0-based position in the prompt file)."),
                RUN,
                Param("k", int, "Edges kept per upstream feature, largest |weight| first.", 10, "--k",
                      label="Top-k edges per feature", widget="slider", minimum=1, maximum=32,
                      form_default=3),  # a drawing stays readable with few edges per feature
                Param("min_path", int, "Keep only edges on paths of at least this many edges.", 2, "--min-path",
                      label="Minimum path length (edges)", widget="slider", minimum=1, maximum=6),
                _min_weight("Drop edges with |weight| below this.", "Minimum |weight|"),
            ),
        ),
        Helper(
            "paths",
            "recurring_paths",
            "Recurring paths: the same chain of features and signs in many prompts, the top N by support.",
            (
                Param("n_edges", int, "Edges per path, 2 to 6.", 3, "--edges", label="Edges per path",
                      widget="slider", minimum=2, maximum=api.MAX_PATH_EDGES),
                Param("min_support", int, "Keep paths found in at least this many prompts.", 2, "--min-support",
                      label="Minimum support (prompts)", minimum=2, step=1),
                RUN,
                Param("min_layer", int, "Paths start at or after this layer.", None, "--min-layer", optional=True,
                      label="From layer", widget="select"),
                Param("max_layer", int, "Paths end at or before this layer.", None, "--max-layer", optional=True,
                      label="To layer", widget="select"),
                Param("signs", str, f"{SIGN_HELP}, e.g. '+-*'.", None, "--signs", optional=True,
                      label="Sign pattern", widget="text"),
                _min_weight("Count an edge only where |weight| >= this.", "Minimum |weight| on every edge"),
                TAG,
                Param("top", int, "The N best paths, exactly (ties broken by run, then nodes, then signs).",
                      100, "--top", label="Top paths", minimum=1, maximum=10_000, step=50),
                Param("rank_by", str, "Rank by 'support', or 'strength' (smallest |mean weight| along the path; "
                      "searches every path reaching --min-support).", "support", "--rank-by", label="Rank by",
                      widget="select"),
                *STRENGTH,
            ),
        ),
        Helper(
            "tag-specific",
            "tag_specific_paths",
            "Recurring paths most specific to one prompt tag: share in the tag minus the largest share elsewhere.",
            (
                Param("tag", str, "The prompt tag (task) to find paths for.", label="Prompt tag", widget="select"),
                Param("n_edges", int, "Edges per path, 2 to 6.", 2, "--edges", label="Edges per path",
                      widget="slider", minimum=2, maximum=api.MAX_PATH_EDGES),
                Param("min_support", int, "Keep paths found in at least this many prompts of the tag.", 2,
                      "--min-support", label="Minimum support in the tag", minimum=2, step=1),
                RUN,
                _min_weight("Count an edge only where |weight| >= this.", "Minimum |weight| on every edge"),
                *STRENGTH,
                Param("top", int, "Most specific paths to show (per run).", 20, "--top", optional=True,
                      label="Paths at most", minimum=1, step=10),
            ),
        ),
        Helper(
            "path-prompts",
            "path_prompts",
            "Prompts that contain a path, with the weight of each of its edges.",
            (
                Param("path", str, "Features of the path, e.g. '5.10 -> 6.20 -> 7.30'."),
                RUN,
                Param("signs", str, f"{SIGN_HELP}.", None, "--signs", optional=True, label="Sign pattern",
                      widget="text"),
                _min_weight("Require |weight| >= this on every edge.", "Minimum |weight| on every edge"),
                TAG,
            ),
        ),
        Helper(
            "neighbourhood",
            "feature_edges",
            "A feature's in- and out-edges across prompts: count, mean, std, sign consistency.",
            (
                FEATURE,
                RUN,
                Param("top", int, "Neighbours per direction (in, out).", 20, "--top", optional=True,
                      label="Neighbours per direction", minimum=1, step=5),
                Param("min_count", int, "Only neighbours seen in at least this many prompts.", 1, "--min-count",
                      label="Seen in at least (prompts)", minimum=1, step=1),
            ),
        ),
        Helper(
            "logits",
            "feature_logits",
            "Tokens that ablating a feature promotes and suppresses most, averaged over prompts.",
            (
                FEATURE,
                RUN,
                Param("top", int, "Tokens per direction (promoted, suppressed).", 10, "--top",
                      label="Tokens per direction", minimum=1, step=5),
            ),
        ),
        Helper(
            "contexts",
            "top_contexts",
            "Top-activating contexts of a feature, with its activation at every token.",
            (
                FEATURE,
                RUN,
                Param("top", int, "Prompts to show.", 10, "--top", label="Contexts shown", minimum=1, step=5),
            ),
        ),
        Helper(
            "compare",
            "compare_prompts",
            "Two prompts' graphs side by side: shared edges and each one's own.",
            (
                Param("prompt_a", int, "First prompt id."),
                Param("prompt_b", int, "Second prompt id."),
                RUN,
                _min_weight("Ignore edges with |weight| below this.", "Minimum |weight|"),
            ),
        ),
    )
}
# fmt: on
# The command's name before `paths` (scripts and notes use it).
HELPERS["recurring"] = replace(HELPERS["paths"], command="recurring", summary="Same as `paths` (its older name).")


def helper(command: str) -> Helper:
    """The helper behind ``featuregraph query COMMAND``."""
    return HELPERS[command]


__all__ = ["FEATURE", "HELPERS", "P_VALUE_CHOICES", "REQUIRED", "RUN", "STRENGTH", "TAG", "Helper", "Param", "helper"]
