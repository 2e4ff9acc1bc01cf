"""Bridges to other libraries: their applications store their events in eventador.

``eventador.ext.eventsourcing``: a persistence module for the ``eventsourcing`` library
(``PERSISTENCE_MODULE=eventador.ext.eventsourcing``), installed with
``pip install eventador[eventsourcing]``.
"""
