"""The framework baseline: a faust-streaming agent over the bench's input topic, doing the
``RuleEvaluator`` work per event (parse, apply, evaluate all 200 compiled rules).

Run by the bench as ``python -m segment_worker.bench.faust_app`` with its configuration as JSON in
``SW_BENCH_FAUST``: ``{"app_id", "bootstrap", "topic", "partitions", "expected", "rules",
"progress_file", "workdir"}``. The agent writes ``{"events", "transitions", "first", "last"}``
(wall-clock seconds) to ``progress_file`` about once a second and when it has seen ``expected``
events; the bench then stops the process. Needs the ``bench`` extra (faust-streaming).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .evaluator import RuleEvaluator


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # atomic: the bench never reads half a file


def main() -> None:
    """Run the faust worker until the bench stops it."""
    import faust
    from faust.worker import Worker

    cfg = json.loads(os.environ["SW_BENCH_FAUST"])
    progress = Path(cfg["progress_file"])
    evaluator = RuleEvaluator(cfg["rules"])
    app = faust.App(
        cfg["app_id"],
        broker=f"kafka://{cfg['bootstrap']}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=cfg["partitions"],
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        datadir=cfg["workdir"],
    )
    topic = app.topic(cfg["topic"], key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")
    state: dict[str, float] = {"first": 0.0, "written": 0.0}

    # faust is an optional extra: untyped when installed, absent (Any) when not.
    @app.agent(topic)  # type: ignore[untyped-decorator, unused-ignore]
    async def evaluate(stream: Any) -> None:
        async for values in stream.take(2000, within=0.2):
            now = time.time()
            if not state["first"]:
                state["first"] = now
            evaluator.run(values)
            done = evaluator.events >= cfg["expected"]
            if done or now - state["written"] >= 1.0:
                state["written"] = now
                _write(progress, {"events": evaluator.events, "transitions": evaluator.transitions,
                                  "rejected": evaluator.rejected, "first": state["first"],
                                  "last": time.time(), "done": done})

    Worker(app, loglevel="WARNING", quiet=True, workdir=cfg["workdir"]).execute_from_commandline()


if __name__ == "__main__":
    main()
