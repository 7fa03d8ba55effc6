"""Coverage-guided fuzzing of SCEP PKIOperation (POST body) through the /scep Lambda."""

import sys

import _common

from tests.fuzz import targets


def main():
    world = _common.start_world()
    plain = targets.scep_message(world)
    from tests import scep_helpers as h

    _common.write_seeds(sys.argv, [
        plain,
        targets.scep_message(world, cipher_name="tripledes_3key", digest_name="sha512"),
        targets.scep_message(world, message_type=targets.protocol.MessageType.CERT_POLL),
        h.to_indefinite(plain, h.der_islands(plain)),
    ])

    def test_one_input(data: bytes):
        targets.check_scep(world, data, may_succeed=True, trace_memory=False)

    _common.run(test_one_input)


if __name__ == "__main__":
    main()
