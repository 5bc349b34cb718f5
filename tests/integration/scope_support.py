"""The principals of the namespace-scope tests (test_server_scope, test_export_api): bearer
token -> Principal, for a server built with a fixed authenticator."""

from __future__ import annotations

from l7scope.server.auth import Principal

PRINCIPALS = {
    "writer-" + "w" * 40: Principal("writer", can_read=False, can_write=True),
    "admin-" + "a" * 40: Principal("admin", can_read=True, can_write=False),
    "shop-" + "s" * 40: Principal("shop-reader", can_read=True, can_write=False,
                                  namespaces=frozenset({"shop"})),
}
WRITER, ADMIN, SHOP = PRINCIPALS


class Table:
    """An authenticator that looks the bearer token up in PRINCIPALS."""

    kind = "test"
    anonymous: Principal | None = None

    def authenticate(self, token: str) -> Principal | None:
        return PRINCIPALS.get(token)
