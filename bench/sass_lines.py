#!/usr/bin/env python3
"""Where a CUDA kernel's instructions go, read off its SASS, without a GPU.

usage: sass_lines.py SASS_FILE [--section TEXT] [--function TEXT] [--loops]

SASS_FILE is what `nvdisasm -g -c FILE.cubin` printed (-g adds the source lines). Build the cubin
with line info, e.g. for the fused targeted-dropout kernel:

  nvcc -std=c++20 -O3 -arch=sm_90 -I. --expt-relaxed-constexpr -lineinfo -cubin \\
       -o fused.cubin kernels/targeted_dropout_fused.cu
  nvdisasm -g -c fused.cubin > fused.sass

(nvdisasm comes with the CUDA toolkit; where a toolkit lacks it, PyPI's nvidia-cuda-nvdisasm
wheel carries it.)

Without options: the instruction count of every function of every kernel (a kernel's section
holds the kernel and the non-inlined functions it calls), names demangled. --section keeps the
kernels whose name holds TEXT, e.g. "kernel<2>"; --function picks the functions whose name holds
TEXT, e.g. "register_select<4>" (the kernel's own body is "(kernel)"), and prints their
instructions per source line, then per opcode. --loops prints each loop of
the picked function (a backward branch): its instructions in all, and those from each file.
Counts are static: a loop's body counts once, whatever its trip count.
"""
import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys

LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
INSTR = re.compile(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
BRANCH = re.compile(r"BRA\s+(?:!?U?P\w+,\s*)?`\((\.L_x_\d+)\)")


def parse(path):
    """{section: {function: [item]}}, item = ('label', name) or ('instr', source, text)."""
    sections = collections.OrderedDict()
    funcs = None
    body = None
    source = "?"
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.startswith(".text."):
                name = line[len(".text."):].rstrip(":")
                funcs = sections.setdefault(name, collections.OrderedDict())
                body = funcs.setdefault("(kernel)", [])
                continue
            if funcs is None:
                continue
            if ".type" in line and "@function" in line and "$" in line:
                # A non-inlined callee: `$kernel$callee`.
                callee = line.split("$")[-1].split(",")[0]
                body = funcs.setdefault(callee, [])
                continue
            m = LINE.search(line)
            if m:
                source = f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)}"
                continue
            m = INSTR.match(line)
            if m:
                body.append(("instr", source, m.group(2)))
            elif line.startswith(".L"):
                body.append(("label", line.rstrip(":")))
    return sections


def readable(names):
    """The names demangled by c++filt (when there is one), without namespaces."""
    names = list(names)
    if shutil.which("c++filt"):
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
        if out.returncode == 0 and len(out.stdout.splitlines()) == len(names):
            names = out.stdout.splitlines()
    return [re.sub(r"_INTERNAL_\w+::|\(anonymous namespace\)::|tdrop::", "", n) for n in names]


def opcode(text):
    words = text.split()
    if words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0]


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    ap = argparse.ArgumentParser(usage=argparse.SUPPRESS, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sass")
    ap.add_argument("--section", default="")
    ap.add_argument("--function")
    ap.add_argument("--loops", action="store_true")
    args = ap.parse_args()
    try:
        sections = parse(args.sass)
    except OSError as e:
        sys.exit(f"sass_lines: cannot read {args.sass}: {e.strerror}")
    sections = collections.OrderedDict(
        (name, collections.OrderedDict(zip(readable(funcs), funcs.values())))
        for name, funcs in zip(readable(sections), sections.values()))
    sections = {k: v for k, v in sections.items() if args.section in k}
    if not sections:
        sys.exit(f"sass_lines: no kernel in {args.sass} matches '{args.section}' "
                 "(is it the output of nvdisasm -g -c?)")
    for sec, funcs in sections.items():
        print(sec)
        for fn, body in funcs.items():
            if args.function is not None and args.function not in fn:
                continue
            instrs = [it for it in body if it[0] == "instr"]
            print(f"  {len(instrs):6d}  {fn}")
            if args.function is None:
                continue
            per_line = collections.Counter(it[1] for it in instrs)
            for src, n in sorted(per_line.items(), key=lambda kv: kv[0]):
                print(f"          {n:5d}  {src}")
            ops = collections.Counter(opcode(it[2]) for it in instrs)
            print("          opcodes: " + ", ".join(f"{o} {n}" for o, n in ops.most_common(16)))
            if args.loops:
                at = {it[1]: i for i, it in enumerate(body) if it[0] == "label"}
                for i, it in enumerate(body):
                    m = BRANCH.search(it[2]) if it[0] == "instr" else None
                    if not m or at.get(m.group(1), i + 1) > i:
                        continue
                    loop = [x for x in body[at[m.group(1)]:i + 1] if x[0] == "instr"]
                    files = collections.Counter(x[1].split(":")[0] for x in loop)
                    print(f"          loop {m.group(1)} (branch at {it[1]}): {len(loop)} "
                          "instructions: " + ", ".join(f"{f} {n}" for f, n in files.most_common()))


if __name__ == "__main__":
    main()
