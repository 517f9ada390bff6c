"""`dnnspec fmt`: one canonical layout, idempotent, every comment kept, meaning unchanged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dnnspec.errors import DiagnosticError
from dnnspec.tools.format import format_file, format_text

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.dnn"))

MESSY = """# header comment
param   hidden=64   # width
param lr = -1e-3*-2
block res(d:int,p:float=0.1)(x){ # a block
  h=x->dense(d)->relu
     ->dropout(p)
  return relu( h+x )
}
model m {  input x: float32[ N , 64 ]; dense(hidden) -> relu
  repeat 2 as i {res(hidden, p = 0.05*i)}


  dense(
      10,
  )   # out
  # last comment in the body

}
train { data digits(validation=0.2)
  loss cross_entropy
  optimizer adam(lr=1e-3)
  schedule cosine(warmup=1 epoch)
  batch 64; epochs 3
  metrics accuracy
}
search random(trials=2, objective = max val_accuracy) { hidden in choice(32,64) }
"""

CANONICAL = """# header comment
param hidden = 64  # width
param lr = -1e-3 * -2

block res(d: int, p: float = 0.1) (x) {  # a block
  h = x -> dense(d) -> relu
    -> dropout(p)
  return relu(h + x)
}

model m {
  input x: float32[N, 64]
  dense(hidden) -> relu
  repeat 2 as i {
    res(hidden, p = 0.05 * i)
  }

  dense(
    10,
  )  # out
  # last comment in the body
}

train {
  data digits(validation = 0.2)
  loss cross_entropy
  optimizer adam(lr = 1e-3)
  schedule cosine(warmup = 1 epoch)
  batch 64
  epochs 3
  metrics accuracy
}

search random(trials = 2, objective = max val_accuracy) {
  hidden in choice(32, 64)
}
"""


def comments(text: str) -> list[str]:
    return [m.group().rstrip() for m in re.finditer(r"#[^\n]*", text)]


def test_a_messy_spec_gets_the_canonical_layout() -> None:
    assert format_text(MESSY) == CANONICAL


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_example_spec_is_formatted_and_formatting_is_idempotent(path: Path) -> None:
    text = path.read_text()
    assert format_text(text, str(path)) == text
    assert format_text(CANONICAL) == CANONICAL


@pytest.mark.parametrize("text", [MESSY, *(p.read_text() for p in SPECS)])
def test_formatting_keeps_every_comment_in_order(text: str) -> None:
    assert comments(format_text(text)) == comments(text)


def test_crlf_and_semicolons_become_lines() -> None:
    text = "model m {\r\n  input x: float32[N, 2]; dense(1)\r\n}\r\n"
    assert format_text(text) == "model m {\n  input x: float32[N, 2]\n  dense(1)\n}\n"


def test_unary_and_binary_minus_are_told_apart() -> None:
    text = "param a = 3\nparam b = a-1\nparam c = -a\nparam d = (-a)*-2\n"
    assert format_text(text) == "param a = 3\nparam b = a - 1\nparam c = -a\nparam d = (-a) * -2\n"


def test_a_spec_that_does_not_parse_is_a_located_error_and_is_left_alone(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError) as exc:
        format_text("model m { dense( }", "bad.dnn")
    assert "bad.dnn:1:18" in exc.value.render()
    bad = tmp_path / "bad.dnn"
    bad.write_text("model m { dense( }\n")
    done = subprocess.run(
        [sys.executable, "-m", "dnnspec", "fmt", str(bad)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "expected ')'" in done.stderr
    assert "Traceback" not in done.stderr
    assert bad.read_text() == "model m { dense( }\n"


def test_fmt_check_reports_without_writing_and_fmt_rewrites(tmp_path: Path) -> None:
    messy = tmp_path / "m.dnn"
    messy.write_text(MESSY)
    check = subprocess.run(
        [sys.executable, "-m", "dnnspec", "fmt", "--check", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1 and f"would reformat {messy}" in check.stdout
    assert messy.read_text() == MESSY
    write = subprocess.run(
        [sys.executable, "-m", "dnnspec", "fmt", str(messy)], capture_output=True, text=True
    )
    assert write.returncode == 0 and messy.read_text() == CANONICAL
    again = subprocess.run(
        [sys.executable, "-m", "dnnspec", "fmt", "--check", str(messy)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0


def test_fmt_of_a_symlink_rewrites_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "m.dnn"
    target.write_text(MESSY)
    link = tmp_path / "link.dnn"
    link.symlink_to(target)
    format_file(link).write()
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert target.read_text() == CANONICAL


def test_the_example_specs_pass_fmt_check() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "dnnspec", "fmt", "--check", str(root / "specs")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
