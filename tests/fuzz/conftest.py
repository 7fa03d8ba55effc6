import pytest

from tests.fuzz.targets import World


@pytest.fixture(scope="module")
def world(moto_server, scep_ca):
    env = pytest.MonkeyPatch()
    built = World(moto_server, scep_ca, env)
    yield built
    built.close()
    env.undo()
