"""The agentd hub: the helpdesk's server program (`agentd hub serve`), its own room.

It may import the core's report model; the core and the PC plugins never import it.
Its dependencies come with the `hub` extra (`pip install 'agentd[hub]'`).
"""
