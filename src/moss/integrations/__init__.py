"""Adapters that plug moss into agent and RAG frameworks, one module per framework.

Each module imports its framework at the top, so it is only importable with that framework's
extra installed (``pip install 'mosslite[langchain]'`` for :mod:`moss.integrations.langchain`);
without it, importing the module raises a :class:`~moss.errors.MossError` naming the extra.
This package itself imports nothing: ``import moss`` and ``import moss.integrations`` never
pull in a framework. See docs/integrations/.
"""
