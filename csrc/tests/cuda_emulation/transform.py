"""Rewrites a CUDA source of csrc/kernels into host C++ for the CUDA emulation.

Usage: python3 transform.py IN.cu OUT.cc

Runs at build time on the current kernel sources.  Only what C++ macros
cannot express is rewritten, mechanically and without knowledge of the
kernels; everything else (qualifiers, built-in variables, intrinsics) comes
from cuda_emulation.h, which the output includes first:

  kernel<<<grid, block, smem, stream>>>(args)
      -> kernel | ::cuda_emulation::Launch(__FILE__, __LINE__, __PRETTY_FUNCTION__,
                                           grid, block, smem, stream).with(args)
  extern __shared__ T name[];
      -> T* name = ::cuda_emulation::dynamic_shared<T>();
  asm volatile("ptx" : "=r"(out), "+f"(acc) : "r"(in), "n"(N) : "memory");
      -> ::cuda_emulation::ptx("ptx", {ptx_out('r', out), ptx_inout('f', acc),
                                       ptx_in('r', in), ptx_in('n', N)});

Line numbers are preserved and a #line directive names the original file, so
compiler diagnostics and __FILE__ / __LINE__ point into csrc/kernels.
"""

import re
import sys
from pathlib import Path

NS = "::cuda_emulation::"
LITERALS = re.compile(r"""//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'""", re.S)


def blank_literals(text):
    """text with comments and the insides of string / character literals
    blanked (positions and newlines kept): the code the rewrites scan."""
    def blank(m):
        s, keep = m.group(), 0 if m.group()[0] == "/" else 1  # keep the quotes
        return s[:keep] + re.sub(r"[^\n]", " ", s[keep:len(s) - keep]) + s[len(s) - keep:]
    return LITERALS.sub(blank, text)


def fail(path, code, pos, why):
    sys.exit(f"{path}:{code.count(chr(10), 0, pos) + 1}: cannot rewrite for the CUDA emulation: {why}")


def split_top(code, begin, end, sep):
    """Spans of code[begin:end] between the `sep` characters outside parentheses."""
    spans, depth = [], 0
    for i in range(begin, end):
        depth += (code[i] == "(") - (code[i] == ")")
        if code[i] == sep and depth == 0:
            spans.append((begin, i))
            begin = i + 1
    return spans + [(begin, end)]


def matching_paren(code, open_index):
    """Index of the ')' that closes the '(' at code[open_index], or -1."""
    depth = 0
    for i in range(open_index, len(code)):
        depth += (code[i] == "(") - (code[i] == ")")
        if depth == 0:
            return i
    return -1


def asm_edits(path, text, code):
    """(begin, end, replacement) of every asm statement: a ptx() call."""
    edits = []
    for m in re.finditer(r"\basm\b(\s+volatile)?\s*\(", code):
        close = matching_paren(code, m.end() - 1)
        if close < 0:
            fail(path, code, m.start(), "unbalanced asm statement")
        sections = split_top(code, m.end(), close, ":")
        begin = sections[0][0]  # the template: its string literals, comments dropped
        literals = re.finditer(r'"[^"]*"', code[slice(*sections[0])])
        template = " ".join(text[begin + t.start():begin + t.end()] for t in literals)
        operands = []
        for kind, section in zip(("out", "in"), sections[1:3]):
            for span in split_top(code, *section, ","):
                if not code[slice(*span)].strip():
                    continue
                om = re.fullmatch(r'\s*("[^"]*")\s*\((.*)\)\s*', code[slice(*span)], re.S)
                constraint = text[span[0] + om.start(1) + 1:span[0] + om.end(1) - 1] if om else ""
                if not re.fullmatch(r"[=+&]*[rlfn]", constraint):
                    fail(path, code, m.start(), f"asm operand {text[slice(*span)].strip()!r} not understood")
                helper = "ptx_in" if kind == "in" else "ptx_inout" if "+" in constraint else "ptx_out"
                operands.append(f"{NS}{helper}('{constraint[-1]}', {' '.join(om[2].split())})")
        edits.append((m.start(), close + 1, f"{NS}ptx({template}, {{{', '.join(operands)}}})"))
    return edits


def transform(path, text):
    code = blank_literals(text)
    opens, closes = list(re.finditer("<<<", code)), list(re.finditer(r">>>\s*\(", code))
    if len(opens) != len(closes):
        fail(path, code, (opens or closes)[0].start(), "unmatched <<< >>> launch syntax")
    edits = [(m.start(), m.end(), f" | {NS}Launch(__FILE__, __LINE__, __PRETTY_FUNCTION__, ") for m in opens]
    edits += [(m.start(), m.end(), ").with(") for m in closes]
    shared = list(re.finditer(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;", code))
    edits += [(m.start(), m.end(), f"{m[1]}* {m[2]} = {NS}dynamic_shared<{m[1]}>();") for m in shared]
    if len(shared) != len(re.findall(r"extern\s+__shared__", code)):
        fail(path, code, code.find("__shared__"), "extern __shared__ declaration not understood")
    edits += asm_edits(path, text, code)
    for begin, end, new in sorted(edits, reverse=True):  # keep the line count
        text = text[:begin] + new + "\n" * code.count("\n", begin, end) + text[end:]
    return text


def main():
    src, dst = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    body = transform(src, src.read_text())
    text = f'#include "cuda_emulation.h"\n#line 1 "{src}"\n{body}'
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists() or dst.read_text() != text:
        dst.write_text(text)


if __name__ == "__main__":
    main()
