from setuptools import setup

setup(
    name="hfself-hello",
    version="0.1.0",
    description="A minimal third-party hfself plugin: one callback, one command.",
    py_modules=["hfself_hello"],
    install_requires=["hfself"],
    entry_points={"hfself": ["hello = hfself_hello"]},
)
