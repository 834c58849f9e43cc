"""The markdown table the statistical benchmarks print (pasted into docs/ as is).  Its own module so a
benchmark can print one without importing another benchmark's dependencies."""

from __future__ import annotations


def table(title: str, head: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
