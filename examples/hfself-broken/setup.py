from setuptools import setup

# A plugin whose module fails to import: hfself must warn, name it and load the others.
setup(name="hfself-broken", version="0.1.0", py_modules=["hfself_broken"],
      entry_points={"hfself": ["broken = hfself_broken"]})
