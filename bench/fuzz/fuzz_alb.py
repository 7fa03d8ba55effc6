"""Coverage-guided fuzzing of ALB Lambda events (JSON text) through every route's Lambda."""

import json
import sys

import _common

from tests.fuzz import targets


def main():
    world = _common.start_world()
    _common.write_seeds(sys.argv, [json.dumps(e).encode() for e in targets.seed_events(world)])

    def test_one_input(data: bytes):
        try:
            event = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return  # the Lambda runtime hands over parsed JSON only
        targets.check_event(world, event, trace_memory=False)

    _common.run(test_one_input)


if __name__ == "__main__":
    main()
