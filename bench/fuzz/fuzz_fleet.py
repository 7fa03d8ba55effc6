"""Coverage-guided fuzzing of Fleet JSON: the REST client, the sync and the policy webhook.

The first input byte picks the target; the rest is the body Fleet (or the webhook sender) sends:
  0-5: the client, for one endpoint (hosts, host, identifier, global/team policies, teams)
  6:   a sync whose host listing is this body
  7:   the policy webhook, authenticated, with this payload
"""

import json
import sys

import _common

from tests.fuzz import targets

ENDPOINTS = sorted(targets.SEED_BODIES)


def main():
    world = _common.start_world()
    seeds = [bytes([i]) + (targets.FIXTURES / targets.SEED_BODIES[e]).read_bytes() for i, e in enumerate(ENDPOINTS)]
    seeds.append(b"\x06" + (targets.FIXTURES / "hosts_list_populated.json").read_bytes())
    seeds.append(b"\x07" + json.dumps(targets.webhook_payload()).encode())
    _common.write_seeds(sys.argv, seeds)

    def test_one_input(data: bytes):
        if not data:
            return
        mode, body = data[0] % 8, data[1:]
        if mode < 6:
            targets.check_fleet_client(world, ENDPOINTS[mode], body, trace_memory=False)
        elif mode == 6:
            targets.check_sync(world, "hosts", body, trace_memory=False)
        else:
            targets.check_webhook(world, body, trace_memory=False)

    _common.run(test_one_input)


if __name__ == "__main__":
    main()
