import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "lambdas", REPO / "policy"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests.infra import harness  # noqa: E402


@pytest.fixture(scope="session")
def deployment() -> harness.Deployment:
    """The full stack: new VPC, zone by name, retained data, Okta enforcement on, one app."""
    return harness.run()


@pytest.fixture(scope="session")
def deployment_before_factor_only() -> harness.Deployment:
    """The first `pulumi up`: the IdP's usage is not yet Factor only, so no enforcement yet."""
    return harness.run({"devicegate:idpFactorOnly": None, "devicegate:oktaAppIds": None})


@pytest.fixture(scope="session")
def deployment_not_retained() -> harness.Deployment:
    return harness.run({"devicegate:retainData": "false"})


def pytest_configure(config):
    # pulumi-aws warns about its own deprecated aliases when its modules load; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")
