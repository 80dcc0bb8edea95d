"""Real components for tests, reusable by plugin authors: a coturn server, certificates,
(and, from their own modules) the fake Genesys Cloud and the network lab.

Everything here binds to loopback or to addresses inside network namespaces the caller
created; nothing sends traffic anywhere else.
"""
