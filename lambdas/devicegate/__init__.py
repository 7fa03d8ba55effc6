"""devicegate: device conditional access for Okta, backed by Fleet."""
