"""Built-in hfself plugins, installed as the import package ``hfself_plugins``.

Each sub-package is one plugin with the same anatomy (config.py, layer/block
modules, model.py, callbacks.py, ``__init__.py`` holding the hook
implementations) and is registered through the ``hfself`` entry-point group,
exactly like a third-party plugin.
"""
