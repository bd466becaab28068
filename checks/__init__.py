"""The check catalogue (``catalog.py``) and the verdict logic (``verdict.py``).

Imports only the result types of ``methods``; which checks a question carries is declared by
the method registry in the question layer.
"""
