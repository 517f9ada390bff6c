"""`import`: standard-library modules and files of blocks become callable from a spec;
mistakes (unknown module, missing file, a library holding more than blocks, a block
defined twice) are located errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SPECS

from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text, stdlib_modules, stdlib_path

MODEL = """{imports}
model m {{
  input x: float32[N, T, 16]
  memory = x -> dense(16)
  transformer_encoder(16, 4, 32)
  h = causal_transformer(16, 2, 64, p = 0.0)
  h -> transformer_decoder(16, 4, 32, memory)
}}
"""


def messages(text: str, file: str = "s.dnn") -> list[str]:
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, file)
    return [d.message for d in caught.value.diagnostics]


def test_the_standard_library_blocks_expand_like_local_ones() -> None:
    spec = load_spec_text(MODEL.format(imports="import transformer"), "s.dnn")
    layers = [n.name for n in spec.model.nodes]
    assert "transformer_encoder_1.attention_1" in layers
    assert "transformer_decoder_1.attention_2" in layers
    cross = next(n for n in spec.model.nodes if n.name == "transformer_decoder_1.attention_2")
    assert cross.args["memory"] == "dense_1"
    # the block's span is in the library file, so errors inside it point there
    attention = next(n for n in spec.model.nodes if n.layer == "attention")
    assert attention.span.file == str(stdlib_path("transformer"))


def test_every_standard_library_module_parses_and_its_blocks_check() -> None:
    assert "transformer" in stdlib_modules()
    for name in stdlib_modules():
        spec = load_spec_text(
            f"import {name}\nmodel m {{\n  input x: float32[N, 4]\n  dense(2)\n}}\n"
        )
        assert spec.model.nodes


def test_an_imported_file_is_read_next_to_the_spec_and_once(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mine.dnn").write_text(
        'import "more.dnn"\nblock twice(d: int) (x) {\n  x -> dense(d) -> widen(d)\n}\n'
    )
    (tmp_path / "lib" / "more.dnn").write_text(
        "block widen(d: int) (x) {\n  x -> dense(2 * d)\n}\n"
    )
    spec_file = tmp_path / "s.dnn"
    spec_file.write_text(
        'import "lib/mine.dnn"\nimport "lib/more.dnn"\n'
        "model m {\n  input x: float32[N, 4]\n  twice(3)\n}\n"
    )
    spec = load_spec(spec_file)
    assert [n.name for n in spec.model.nodes] == ["twice_1.dense_1", "twice_1.widen_1.dense_1"]


def test_import_mistakes_are_located(tmp_path: Path) -> None:
    body = "\nmodel m {\n  input x: float32[N, 4]\n  dense(2)\n}\n"
    assert messages("import transfomer" + body) == ["no standard-library module 'transfomer'"]
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text("import transfomer" + body, "s.dnn")
    assert caught.value.diagnostics[0].help == "did you mean 'transformer'?"
    assert messages('import "nowhere.dnn"' + body, str(tmp_path / "s.dnn")) == [
        "imported file 'nowhere.dnn' does not exist"
    ]
    (tmp_path / "bad.dnn").write_text("param x = 1\nblock b(d: int) (x) {\n  x -> dense(d)\n}\n")
    assert messages('import "bad.dnn"' + body, str(tmp_path / "s.dnn")) == [
        "a library holds blocks and imports only; this param belongs in a spec"
    ]
    twice = "import transformer\nblock transformer_encoder(d: int) (x) {\n  x -> dense(d)\n}" + body
    assert messages(twice) == ["block 'transformer_encoder' is defined twice"]
    assert "found 'import'" in messages("model import {\n}\n")[0]


def test_char_transformer_spec_uses_the_standard_library() -> None:
    assert "import transformer" in (SPECS / "char_transformer.dnn").read_text()
