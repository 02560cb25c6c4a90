"""The C library's one header (`csrc/kernels.h`) and the ctypes table Python calls it through
(`abi.SIGNATURES`) describe the same functions: the same names, argument counts, and argument and
result types (C mapped to ctypes). A signature changed on one side only fails here, instead of
passing wrong values to C at run time. Every function a .c file exports is in the header."""

import ctypes
import re

import pytest

from tasks.backends.engine import abi, kernels

HEADER = kernels.CSRC / "kernels.h"
C_TO_CTYPES = {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "float": ctypes.c_float, "void": None}


def _code(text: str) -> str:
    """C source without comments and preprocessor lines."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r"^\s*#[^\n]*", " ", text, flags=re.M)


def _ctype(declaration: str):
    """`const float *x` -> c_void_p, `int64_t n` -> c_int64 (KeyError: a type the table cannot hold)."""
    if "*" in declaration:
        return ctypes.c_void_p
    return C_TO_CTYPES[declaration.replace("const", " ").split()[0]]


def declared(header: str) -> dict[str, tuple]:
    """{name: (result, [argument types])} of every function prototype in `header`'s text."""
    found = {}
    for result, name, parameters in re.findall(r"(\w+[\s*]+?)\s*(\w+)\s*\(([^)]*)\)\s*;", _code(header)):
        parameters = [p.strip() for p in parameters.split(",")]
        arguments = [] if parameters == ["void"] else [_ctype(p) for p in parameters]
        found[name] = (_ctype(result), arguments)
    return found


def mismatches(header: str, table: dict) -> list[str]:
    """How `table` ({name: (restype, argtypes)}) differs from `header`'s prototypes."""
    wanted = declared(header)
    problems = [f"{name}: in the header, not in the table" for name in wanted.keys() - table.keys()]
    problems += [f"{name}: in the table, not in the header" for name in table.keys() - wanted.keys()]
    for name in wanted.keys() & table.keys():
        (result, arguments), (restype, argtypes) = wanted[name], table[name]
        if result is not restype:
            problems.append(f"{name}: returns {result}, the table says {restype}")
        if len(arguments) != len(argtypes):
            problems.append(f"{name}: {len(arguments)} arguments, the table has {len(argtypes)}")
        for i, (c, py) in enumerate(zip(arguments, argtypes)):
            if c is not py:
                problems.append(f"{name}: argument {i} is {c.__name__}, the table says {py.__name__}")
    return problems


def test_the_ctypes_table_matches_the_header():
    assert mismatches(HEADER.read_text(), abi.SIGNATURES) == []
    assert {"decode_attention", "linear", "sample_rows", "decode_layers"} <= set(declared(HEADER.read_text()))


@pytest.mark.parametrize(
    "change",
    [
        ("float scale,", "double scale,"),  # decode_attention: a type the table cannot hold
        ("int64_t max_len, float scale,", "float max_len, float scale,"),  # decode_attention: a type changed
        ("int64_t then_n,", "int64_t then_n, int64_t then_m,"),  # linear: an argument added
        ("int linear_available(void);", "int64_t linear_available(void);"),  # a result changed
        ("void argmax_rows(", "void argmax_rows_v2("),  # a function renamed
    ],
)
def test_a_signature_changed_in_the_header_alone_is_caught(change):
    header = HEADER.read_text()
    old, new = change
    assert old in header
    try:
        problems = mismatches(header.replace(old, new, 1), abi.SIGNATURES)
    except KeyError:  # `double`: no ctypes type in the table's vocabulary
        problems = ["unknown type"]
    assert problems


def test_every_function_a_c_file_exports_is_declared_in_the_header():
    """The header is the whole interface: a non-static function defined in a .c file is in it (the
    compiler, with the header included in every file, checks the definitions match it)."""
    header = declared(HEADER.read_text())
    definition = re.compile(r"^(?:int|void|int64_t|float)\s+\**\s*(\w+)\s*\([^)]*\)\s*\{", re.M)
    exported = set()
    for source in kernels.SOURCES:
        text = source.read_text()
        assert '#include "kernels.h"' in text, source.name
        exported |= set(definition.findall(_code(text)))
    assert exported == set(header)
    assert kernels.CSRC / "kernels.h" in kernels.HEADERS  # a changed header rebuilds the library
