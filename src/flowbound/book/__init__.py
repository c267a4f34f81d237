"""The book: profiles, the cache of trained networks, one function per figure or
table (``experiments``), drawing, tables, glue, the build and the CLI.

May import: every layer below. Nothing imports it.
"""
