"""The whole resolver: each section in order, then the search space against the whole spec."""

from __future__ import annotations

from collections.abc import Mapping

from dnnspec import ir
from dnnspec.errors import DiagnosticError, Note, Span
from dnnspec.resolve.definitions import DefinitionsResolver
from dnnspec.resolve.expressions import Expressions, NameUses
from dnnspec.resolve.model import ModelResolver
from dnnspec.resolve.problems import Problems
from dnnspec.resolve.search import SearchResolver
from dnnspec.resolve.train import TrainResolver
from dnnspec.resolve.values import Definitions, Fatal, Poison, Scalar
from dnnspec.syntax import ast


class Resolver:
    """Resolves one parsed spec; `run` returns the Spec or raises every problem found.

    The sections share three things, passed to each explicitly: the `Problems` they report
    into, the `Definitions` (params and blocks) the first section fills and the others
    read, and the `NameUses` their expressions record for later binding errors.
    """

    def __init__(
        self,
        spec: ast.SpecFile,
        source: str,
        overrides: Mapping[str, tuple[Scalar, Span]],
        check_space: bool,
    ) -> None:
        self.spec = spec
        self.source = source
        self.overrides = overrides
        self.check_space = check_space
        self.problems = Problems()
        self.defs = Definitions(overrides)
        uses = NameUses()
        values = Expressions(self.problems, self.defs, uses)  # outside the model: no calls
        self.definitions = DefinitionsResolver(self.problems, self.defs, values)
        self.model = ModelResolver(self.problems, self.defs, uses)
        self.train = TrainResolver(self.problems, values)
        self.search = SearchResolver(self.problems, self.defs, values)

    def run(self) -> ir.Spec:
        items = self.spec.items
        models = [i for i in items if isinstance(i, ast.ModelDef)]
        trains = [i for i in items if isinstance(i, ast.TrainDef)]
        searches = [i for i in items if isinstance(i, ast.SearchDef)]
        for kind, found in (("model", models), ("train", trains), ("search", searches)):
            for extra in found[1:]:
                self.problems.fail(
                    f"a spec has one {kind} section; this is a second one",
                    extra.span,
                    notes=[Note(message=f"the first {kind} section", span=found[0].span)],
                )
        self.definitions.resolve_params([i for i in items if isinstance(i, ast.ParamDecl)])
        self.definitions.collect_blocks([i for i in items if isinstance(i, ast.BlockDef)])
        graph = None
        if models:
            try:
                graph = self.model.resolve_model(models[0])
            except Fatal:
                raise self.problems.error() from None
        else:
            self.problems.fail(
                "this spec has no model",
                self.spec.span,
                help="add one, e.g. model m { input x: float32[N, 4]; dense(1) }",
            )
        outputs = graph.outputs if graph is not None else None
        train = self.train.resolve_train(trains[0], outputs) if trains else None
        if train is not None and self.model.frozen:  # `trainable = false` on a layer
            train = train.model_copy(update={"freeze": (*train.freeze, *self.model.frozen)})
        search = self.search.resolve_search(searches[0], train) if searches else None
        if search is not None and self.check_space and not self.problems:
            for dim in search.dims:
                self.check_candidates(dim)
        if self.problems:
            raise self.problems.error()
        assert graph is not None
        params = {k: v for k, v in self.defs.params.items() if not isinstance(v, Poison)}
        return ir.Spec(source=self.source, params=params, model=graph, train=train, search=search)

    def check_candidates(self, dim: ir.SearchDim) -> None:
        """Resolve the spec with each choice (or both ends of a range) of one dimension, so
        that a space that breaks the model is reported before any trial runs."""
        candidates = dim.values if dim.space == "choice" else dim.values[:2]
        for value in candidates:
            overrides = {**self.overrides, dim.param: (value, dim.span)}
            try:
                resolve(self.spec, self.source, overrides, check_space=False)
            except DiagnosticError as exc:
                note = Note(
                    message=f"with {dim.param} = {value!r} from this search space", span=dim.span
                )
                for diag in exc.diagnostics:
                    if all(n.span != dim.span for n in diag.notes):
                        diag = diag.model_copy(update={"notes": (*diag.notes, note)})
                    self.problems.report(diag)


def resolve(
    spec: ast.SpecFile,
    source: str,
    overrides: Mapping[str, tuple[Scalar, Span]] | None = None,
    check_space: bool = True,
) -> ir.Spec:
    """The resolved spec of a parsed file; `overrides` replace param values (value, where the
    override was written); `check_space` also resolves each value of the search space."""
    return Resolver(spec, source, overrides or {}, check_space).run()
