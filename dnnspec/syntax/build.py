"""Lark parse tree -> syntax IR (`dnnspec.syntax.ast`), one method per grammar rule.

The transformer is Lark's non-recursive one, so tree depth never touches Python's stack.
Literal problems the grammar cannot see (an unknown string escape, a number too large
for int64 or float) are collected and raised together after the walk.
"""

from __future__ import annotations

import re
from typing import Any

from lark import Token, Transformer_NonRecursive, Tree, v_args
from lark.tree import Meta

from dnnspec.errors import Diagnostic, DiagnosticError, Span
from dnnspec.schema import INT64_MAX
from dnnspec.syntax import ast
from dnnspec.syntax.parse import token_span

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}
_ESCAPE = re.compile(r"\\(.)")
_OPERATORS: dict[str, ast.OperatorSymbol] = {"+": "+", "-": "-", "*": "*", "/": "/"}


@v_args(meta=True)
class _Builder(Transformer_NonRecursive[Token, Any]):
    """Turns each rule's children into the matching syntax-IR node."""

    def __init__(self, file: str) -> None:
        super().__init__(visit_tokens=False)
        self.file = file
        self.problems: list[Diagnostic] = []

    # -- helpers -------------------------------------------------------------------------

    def span(self, meta: Meta) -> Span:
        if meta.empty:
            return Span(file=self.file, line=1, col=1, end_line=1, end_col=1)
        return Span(
            file=self.file,
            line=meta.line,
            col=meta.column,
            end_line=meta.end_line,
            end_col=meta.end_column,
        )

    def name(self, tok: Token) -> ast.Name:
        return ast.Name(id=str(tok), span=token_span(tok, self.file))

    def decode_number(self, tok: Token, negative: bool = False) -> ast.Number:
        span = token_span(tok, self.file)
        text = ("-" if negative else "") + str(tok)
        value: int | float
        if any(c in text for c in ".eE"):
            value = float(text)
            if value in (float("inf"), float("-inf")):
                self.problems.append(Diagnostic(message=f"number {tok} is too large", span=span))
                value = 0.0
        else:
            digits = str(tok).lstrip("0") or "0"
            if len(digits) > 19 or int(digits) > INT64_MAX:
                self.problems.append(
                    Diagnostic(
                        message=f"integer {tok} does not fit in 64 bits",
                        span=span,
                        help="write it as a float (with '.0' or an exponent) if it is meant so",
                    )
                )
                value = 0
            else:
                value = -int(digits) if negative else int(digits)
        return ast.Number(value=value, span=span)

    def decode_string(self, tok: Token) -> ast.String:
        span = token_span(tok, self.file)

        def unescape(match: re.Match[str]) -> str:
            char = match.group(1)
            if char not in _ESCAPES:
                self.problems.append(
                    Diagnostic(
                        message=f"unknown escape '\\{char}' in a string",
                        span=span,
                        help='known escapes: \\n \\t \\\\ \\"',
                    )
                )
                return char
            return _ESCAPES[char]

        return ast.String(value=_ESCAPE.sub(unescape, str(tok)[1:-1]), span=span)

    # -- top level -----------------------------------------------------------------------

    def start(self, meta: Meta, items: list[ast.TopItem]) -> ast.SpecFile:
        return ast.SpecFile(items=tuple(items), span=self.span(meta))

    def import_stmt(self, meta: Meta, c: list[Token]) -> ast.Import:
        tok = c[0]
        module = self.decode_string(tok) if tok.type == "STRING" else self.name(tok)
        return ast.Import(module=module, span=self.span(meta))

    def param(self, meta: Meta, c: list[Any]) -> ast.ParamDecl:
        return ast.ParamDecl(name=self.name(c[0]), value=c[1], span=self.span(meta))

    def model(self, meta: Meta, c: list[Any]) -> ast.ModelDef:
        return ast.ModelDef(name=self.name(c[0]), body=c[1], span=self.span(meta))

    def block(self, meta: Meta, c: list[Any]) -> ast.BlockDef:
        params = tuple(x for x in c[1:-1] if isinstance(x, ast.BlockParam))
        inputs = next((x for x in c[1:-1] if isinstance(x, list)), [])
        return ast.BlockDef(
            name=self.name(c[0]),
            params=params,
            inputs=tuple(inputs),
            body=c[-1],
            span=self.span(meta),
        )

    def bparam(self, meta: Meta, c: list[Any]) -> ast.BlockParam:
        return ast.BlockParam(
            name=self.name(c[0]),
            type=self.name(c[1]),
            default=c[2] if len(c) > 2 else None,
            span=self.span(meta),
        )

    def block_inputs(self, meta: Meta, c: list[Token]) -> list[ast.Name]:
        return [self.name(t) for t in c]

    def body(self, meta: Meta, stmts: list[ast.Stmt]) -> tuple[ast.Stmt, ...]:
        return tuple(stmts)

    # -- statements ----------------------------------------------------------------------

    def input_stmt(self, meta: Meta, c: list[Any]) -> ast.InputStmt:
        return ast.InputStmt(
            name=self.name(c[0]), dtype=self.name(c[1]), dims=tuple(c[2:]), span=self.span(meta)
        )

    def assign(self, meta: Meta, c: list[Any]) -> ast.Assign:
        return ast.Assign(target=self.name(c[0]), value=c[1], span=self.span(meta))

    def return_stmt(self, meta: Meta, c: list[Any]) -> ast.Return:
        return ast.Return(value=c[0], span=self.span(meta))

    def return_outputs(self, meta: Meta, c: list[Any]) -> ast.ReturnOutputs:
        return ast.ReturnOutputs(outputs=tuple(c), span=self.span(meta))

    def named_output(self, meta: Meta, c: list[Any]) -> ast.NamedOutput:
        return ast.NamedOutput(name=self.name(c[0]), value=c[1], span=self.span(meta))

    def expr_stmt(self, meta: Meta, c: list[Any]) -> ast.ExprStmt:
        return ast.ExprStmt(value=c[0], span=self.span(meta))

    def repeat_head(self, meta: Meta, c: list[Any]) -> tuple[Span, ast.Expr, ast.Name | None]:
        return self.span(meta), c[0], self.name(c[1]) if len(c) > 1 else None

    def repeat(self, meta: Meta, c: list[Any]) -> ast.Repeat:
        head, count, var = c[0]
        return ast.Repeat(count=count, var=var, body=c[1], head=head, span=self.span(meta))

    # -- train and search ----------------------------------------------------------------

    def train(self, meta: Meta, c: list[Any]) -> ast.TrainDef:
        return ast.TrainDef(items=c[0], span=self.span(meta))

    def train_body(self, meta: Meta, items: list[ast.TrainItem]) -> tuple[ast.TrainItem, ...]:
        return tuple(items)

    def train_item(self, meta: Meta, c: list[Any]) -> ast.TrainItem:
        return ast.TrainItem(key=self.name(c[0]), values=tuple(c[1:]), span=self.span(meta))

    def labelled(self, meta: Meta, c: list[Any]) -> ast.Labelled:
        return ast.Labelled(label=self.name(c[0]), value=c[1], span=self.span(meta))

    def search(self, meta: Meta, c: list[Any]) -> ast.SearchDef:
        head, method, args = c[0]
        return ast.SearchDef(method=method, args=args, head=head, dims=c[1], span=self.span(meta))

    def search_head(self, meta: Meta, c: list[Any]) -> tuple[Span, ast.Name, tuple[ast.Arg, ...]]:
        return self.span(meta), self.name(c[0]), c[1] if len(c) > 1 else ()

    def search_body(self, meta: Meta, dims: list[ast.SearchDim]) -> tuple[ast.SearchDim, ...]:
        return tuple(dims)

    def search_dim(self, meta: Meta, c: list[Any]) -> ast.SearchDim:
        return ast.SearchDim(param=self.name(c[0]), space=c[1], span=self.span(meta))

    # -- expressions ---------------------------------------------------------------------

    def chain(self, meta: Meta, steps: list[ast.Expr]) -> ast.Chain:
        return ast.Chain(steps=tuple(steps), span=self.span(meta))

    def with_unit(self, meta: Meta, c: list[Any]) -> ast.WithUnit:
        return ast.WithUnit(value=c[0], unit=self.name(c[1]), span=self.span(meta))

    def arith(self, meta: Meta, c: list[Any]) -> ast.Arith:
        ops = tuple(
            ast.Operator(symbol=_OPERATORS[str(t)], span=token_span(t, self.file)) for t in c[1::2]
        )
        return ast.Arith(operands=tuple(c[0::2]), ops=ops, span=self.span(meta))

    def neg(self, meta: Meta, c: list[Any]) -> ast.Expr:
        operand: ast.Expr = c[-1]
        if len(c) % 2 == 1:
            return operand
        return ast.Neg(operand=operand, span=self.span(meta))

    def number(self, meta: Meta, c: list[Token]) -> ast.Number:
        return self.decode_number(c[0])

    def number_literal(self, meta: Meta, c: list[Token]) -> ast.Number:
        number = self.decode_number(c[-1], negative=len(c) == 2)
        return number.model_copy(update={"span": self.span(meta)})

    def string(self, meta: Meta, c: list[Token]) -> ast.String:
        return self.decode_string(c[0])

    def true(self, meta: Meta, c: list[Any]) -> ast.Bool:
        return ast.Bool(value=True, span=self.span(meta))

    def false(self, meta: Meta, c: list[Any]) -> ast.Bool:
        return ast.Bool(value=False, span=self.span(meta))

    def ref(self, meta: Meta, c: list[Token]) -> ast.Name:
        return self.name(c[0])

    def call(self, meta: Meta, c: list[Any]) -> ast.Call:
        return ast.Call(func=self.name(c[0]), args=c[1], span=self.span(meta))

    def paren(self, meta: Meta, c: list[Any]) -> ast.Paren:
        return ast.Paren(args=c[0], span=self.span(meta))

    def list_expr(self, meta: Meta, items: list[ast.Expr]) -> ast.ListExpr:
        return ast.ListExpr(items=tuple(items), span=self.span(meta))

    def call_args(self, meta: Meta, c: list[Any]) -> tuple[ast.Arg, ...]:
        return tuple(
            a if isinstance(a, ast.Arg) else ast.Arg(name=None, value=a, span=a.span) for a in c
        )

    def kwarg(self, meta: Meta, c: list[Any]) -> ast.Arg:
        return ast.Arg(name=self.name(c[0]), value=c[1], span=self.span(meta))


def build(tree: Tree[Token], file: str) -> Any:
    """The syntax IR of a parse tree (a `SpecFile` for `start`, an `Expr` for `literal`)."""
    builder = _Builder(file)
    result = builder.transform(tree)
    if builder.problems:
        raise DiagnosticError(builder.problems)
    return result
