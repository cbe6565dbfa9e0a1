"""Read traces back with msgtrace's Python client: the slowest runs of the last hour.

Lists the five slowest traces that started in the last hour, then fetches the slowest one
and prints its span tree and what it cost, model by model.

    python examples/query_traces.py                          # a msgtrace on 127.0.0.1:4321
    python examples/query_traces.py http://msgtrace.internal:4321

The client (``traces.client``) comes with msgtrace itself and uses only the standard
library. Send something first (``msgtrace demo``, or another example) if the server is new.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from traces.client import Client, MsgtraceError

MAX_TREE_LINES = 30  # a batch run can have thousands of spans


def main(url: str) -> int:
    client = Client(url)
    try:
        slowest = list(client.traces(since="1h", sort="-duration", limit=5))
    except MsgtraceError as exc:  # unreachable, or a filter the server refused
        print(f"msgtrace: {exc}", file=sys.stderr)
        return 1
    if not slowest:
        print(f"No traces started in the last hour at {url}: send some first.")
        return 0

    print("Slowest traces of the last hour:")
    for summary in slowest:
        errors = f"  {summary.error_count} errors" if summary.error_count else ""
        print(
            f"  {summary.trace_id}  {summary.duration_ms / 1000:7.2f} s  "
            f"{summary.span_count:4} spans  {summary.name}{errors}"
        )

    trace = client.trace(slowest[0].trace_id)  # the summary and every span
    tree = client.tree(trace.trace_id)  # the same spans, nested
    print(f"\n{trace.name} ({trace.service_name}), {trace.duration_ms / 1000:.2f} s:")
    for shown, (depth, node) in enumerate(tree.walk()):
        if shown == MAX_TREE_LINES:
            print(f"  ... and {trace.span_count - shown:,} more spans")
            break
        span = node.span
        if span is None:  # the root span never arrived; its children still did
            print("  (root span not received)")
            continue
        details = [f"{span.duration_ms:.0f} ms"]
        if span.model:
            details.append(f"{span.model}, {span.input_tokens}+{span.output_tokens} tokens")
        if span.is_error:
            details.append(f"ERROR: {span.status_message}")
        print(f"  {'  ' * depth}{span.name}  [{'; '.join(details)}]")

    by_model: dict[str, float] = defaultdict(float)
    for span in trace.spans:
        if span.cost is not None:  # None: the span carried no cost, unlike a cost of 0
            by_model[span.model or "(no model)"] += span.cost
    print(f"\nCost ${trace.cost:.6f} for {trace.total_tokens:,} tokens")
    for model, cost in sorted(by_model.items(), key=lambda item: -item[1]):
        print(f"  {model}: ${cost:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4321"))
