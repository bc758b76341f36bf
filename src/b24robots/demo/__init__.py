"""The demo: sample module and stored robots shipped with the package for `b24robots demo`."""
