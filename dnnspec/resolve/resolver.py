"""The whole resolver: each section in order, then the search space against the whole spec."""

from __future__ import annotations

from collections.abc import Mapping

from dnnspec import ir
from dnnspec.errors import DiagnosticError, Note, Span
from dnnspec.resolve.definitions import DefinitionsResolver
from dnnspec.resolve.search import SearchResolver
from dnnspec.resolve.train import TrainResolver
from dnnspec.resolve.values import Fatal, Poison, Scalar
from dnnspec.syntax import ast


class Resolver(DefinitionsResolver, TrainResolver, SearchResolver):
    """Resolves one parsed spec; `run` returns the Spec or raises every problem found."""

    def run(self) -> ir.Spec:
        items = self.spec.items
        models = [i for i in items if isinstance(i, ast.ModelDef)]
        trains = [i for i in items if isinstance(i, ast.TrainDef)]
        searches = [i for i in items if isinstance(i, ast.SearchDef)]
        for kind, found in (("model", models), ("train", trains), ("search", searches)):
            for extra in found[1:]:
                self.fail(
                    f"a spec has one {kind} section; this is a second one",
                    extra.span,
                    notes=[Note(message=f"the first {kind} section", span=found[0].span)],
                )
        self.resolve_params([i for i in items if isinstance(i, ast.ParamDecl)])
        self.collect_blocks([i for i in items if isinstance(i, ast.BlockDef)])
        graph = None
        if models:
            try:
                graph = self.resolve_model(models[0])
            except Fatal:
                raise DiagnosticError(self.problems) from None
        else:
            self.fail(
                "this spec has no model",
                self.spec.span,
                help="add one, e.g. model m { input x: float32[N, 4]; dense(1) }",
            )
        train = self.resolve_train(trains[0]) if trains else None
        search = self.resolve_search(searches[0], train) if searches else None
        if search is not None and self.check_space and not self.problems:
            for dim in search.dims:
                self.check_candidates(dim)
        if self.problems:
            raise DiagnosticError(self.problems)
        assert graph is not None
        params = {k: v for k, v in self.params.items() if not isinstance(v, Poison)}
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
                    self.report(diag)


def resolve(
    spec: ast.SpecFile,
    source: str,
    overrides: Mapping[str, tuple[Scalar, Span]] | None = None,
    check_space: bool = True,
) -> ir.Spec:
    """The resolved spec of a parsed file; `overrides` replace param values (value, where the
    override was written); `check_space` also resolves each value of the search space."""
    return Resolver(spec, source, overrides or {}, check_space).run()
