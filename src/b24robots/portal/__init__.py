"""The portal protocol: who a request is from, and what install, update and uninstall mean.

`grant` reads what a request claims; `oauth` confirms a claim at a trusted Bitrix24 OAuth server (the only
source of trust); `auth` authenticates the requests a portal sends on its own (robot calls, ONAPPUNINSTALL)
by the application token; `install` is the lifecycle; `robot_call` is the intake of robot calls.
Between the stores and REST client below and the HTTP routes in b24robots.web above.
"""
