"""Turn `perf script` output into folded stacks, a flame graph SVG and a top-functions table.

Why our own: py-spy 0.4.3 reads no Python frames from free-threaded 3.13 (docs/runtime.md),
so profiles come from `perf record -g` on an interpreter run with `-X perf`, whose
trampolines name each Python frame `py::function:/path/file.py`.  The usual converters
(FlameGraph's Perl scripts, inferno) are not in the package registries these machines
reach, and the step is small: fold identical stacks, lay them out, write rectangles.

    perf script -i perf.data | python perf/flame.py --svg out.svg --top out.txt
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

_HEADER = re.compile(r"^(?P<comm>\S.*?)\s+(?P<pid>\d+)(?:/(?P<tid>\d+))?\s+")
_FRAME = re.compile(r"^\s+[0-9a-f]+\s+(?P<symbol>.+?)\s+\((?P<dso>[^()]*)\)\s*$")
_OFFSET = re.compile(r"\+0x[0-9a-f]+$")


def short_symbol(symbol: str, dso: str) -> str:
    """`py::_on_prepare:/repo/connector/packet/worker.py` -> `py:worker.py:_on_prepare`;
    native symbols lose their offset; unknown ones name their library."""
    symbol = _OFFSET.sub("", symbol)
    if symbol.startswith("py::"):
        function, _, path = symbol[4:].partition(":")
        return f"py:{path.rsplit('/', 1)[-1]}:{function}"
    if symbol in ("[unknown]", ""):
        return f"[{dso.rsplit('/', 1)[-1] or 'unknown'}]"
    return symbol


def fold(lines) -> Counter:
    """Count each distinct stack (`thread;outermost;...;innermost`) in `perf script` output."""
    stacks: Counter = Counter()
    thread, frames = None, []
    for line in lines:
        if not line.strip():
            if thread is not None:
                stacks[";".join([thread, *reversed(frames)])] += 1
            thread, frames = None, []
            continue
        if thread is None:
            header = _HEADER.match(line)
            if header:
                thread = header["comm"].strip().replace(";", ":")
            continue
        frame = _FRAME.match(line)
        if frame:
            frames.append(short_symbol(frame["symbol"], frame["dso"]).replace(";", ":"))
    if thread is not None:
        stacks[";".join([thread, *reversed(frames)])] += 1
    return stacks


@dataclass
class _Node:
    name: str
    total: int = 0
    children: dict = field(default_factory=dict)


def _tree(stacks: Counter) -> _Node:
    root = _Node("all")
    for stack, count in stacks.items():
        node = root
        node.total += count
        for name in stack.split(";"):
            node = node.children.setdefault(name, _Node(name))
            node.total += count
    return root


def _colour(name: str) -> str:
    """Python frames green, the interpreter and native code warm, the kernel grey-blue."""
    shade = sum(map(ord, name)) % 60
    if name.startswith("py:"):
        return f"rgb({60 + shade},{170 + shade // 2},{80 + shade // 2})"
    if name.startswith(("[k", "entry_", "__x64_", "do_syscall")) or "kernel" in name:
        return f"rgb({120 + shade},{140 + shade},{190})"
    return f"rgb({220 + shade // 2},{110 + shade},{50 + shade // 2})"


def svg(stacks: Counter, title: str, width: int = 1600, row: int = 16) -> str:
    """A flame graph: the root at the bottom, each frame as wide as its share of samples."""
    root = _tree(stacks)
    depth = _depth(root)
    height = (depth + 3) * row
    scale = (width - 20) / max(root.total, 1)
    rects: list[str] = []

    def place(node: _Node, x: float, level: int) -> None:
        w = node.total * scale
        if w < 0.3:
            return
        y = height - (level + 2) * row
        share = 100.0 * node.total / max(root.total, 1)
        label = html.escape(node.name)
        text = html.escape(node.name[: int(w / 7)]) if w > 21 else ""
        rects.append(f'<g><title>{label} ({node.total} samples, {share:.2f}%)</title>'
                     f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="{_colour(node.name)}"/>'
                     f'<text x="{x + 2:.1f}" y="{y + row - 4}">{text}</text></g>')
        for child in sorted(node.children.values(), key=lambda c: c.name):
            place(child, x, level + 1)
            x += child.total * scale

    place(root, 10, 0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="11">'
            f'<rect width="100%" height="100%" fill="#fdfdf6"/>'
            f'<text x="10" y="{row}" font-size="13">{html.escape(title)}</text>'
            + "".join(rects) + "</svg>\n")


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def top(stacks: Counter, limit: int = 40) -> str:
    """Samples per thread, then the functions with the most samples of their own (self) and
    in their callees too (inclusive, each stack counted once per function)."""
    total = max(sum(stacks.values()), 1)
    threads: Counter = Counter()
    own: Counter = Counter()
    inclusive: Counter = Counter()
    by_thread: dict[str, Counter] = defaultdict(Counter)
    for stack, count in stacks.items():
        thread, *frames = stack.split(";")
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
            by_thread[thread][frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"samples: {total}", "", "per thread (share of all samples):"]
    lines += [f"  {100 * n / total:6.2f}%  {name}" for name, n in threads.most_common()]
    lines += ["", f"top {limit} self (where the CPU was):"]
    lines += [f"  {100 * n / total:6.2f}%  {name}" for name, n in own.most_common(limit)]
    lines += ["", f"top {limit} inclusive (with callees):"]
    lines += [f"  {100 * n / total:6.2f}%  {name}" for name, n in inclusive.most_common(limit)]
    python_inclusive = [(name, n) for name, n in inclusive.most_common() if name.startswith("py:")][:limit]
    lines += ["", f"top {limit} Python functions, inclusive:"]
    lines += [f"  {100 * n / total:6.2f}%  {name}" for name, n in python_inclusive]
    for thread, counts in sorted(by_thread.items(), key=lambda item: -threads[item[0]]):
        lines += ["", f"{thread}: top 10 self"]
        lines += [f"  {100 * n / total:6.2f}%  {name}" for name, n in counts.most_common(10)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--svg", help="write the flame graph here")
    parser.add_argument("--top", help="write the top-functions text here (default: stdout)")
    parser.add_argument("--folded", help="write the folded stacks here")
    parser.add_argument("--title", default="connector CPU profile")
    args = parser.parse_args(argv)
    stacks = fold(sys.stdin)
    if not stacks:
        sys.stderr.write("no samples in the input\n")
        return 1
    if args.folded:
        with open(args.folded, "w") as out:
            out.writelines(f"{stack} {count}\n" for stack, count in stacks.most_common())
    if args.svg:
        with open(args.svg, "w") as out:
            out.write(svg(stacks, args.title))
    text = top(stacks)
    if args.top:
        with open(args.top, "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
