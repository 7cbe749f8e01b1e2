"""The accounts (API tokens) of the web tests, shared by conftest.py and the tests."""

# name -> (role, kwargs of TokenStore.add)
ACCOUNTS = {
    "root": ("root", {}),
    "resellera": ("reseller", {"reseller": "resellera"}),
    "resellerb": ("reseller", {"reseller": "resellerb"}),
    "localacct": ("user", {"user": "localacct"}),
    "remoteacct": ("user", {"user": "remoteacct"}),
    "nobody": ("user", {"user": "nobody-at-all"}),
    "alice": ("webmail", {"address": "alice@local.test"}),
    "bob": ("webmail", {"address": "bob@local.test"}),
    "ext": ("webmail", {"address": "ext-sender@remote.test"}),
}
