"""In-process actors on asyncio: named actors, one message at a time, supervised.

An ``ActorSystem`` runs each spawned actor as one task draining its mailbox, in
order. ``ActorRef.tell`` queues a message; ``ActorRef.ask`` waits for the answer.
A handler that raises is dealt with by the actor's ``Supervisor``; messages that
reach no handler are kept in ``system.dead_letters``. Persistence is not here:
persistent actors build on these through ``start()``, which spawn awaits.

    async with ev.ActorSystem() as system:
        counter = await system.spawn("counter", Counter)
        counter.tell(Increment(by=2))
        total = await counter.ask(Get())
"""

from eventador.actors.actor import Actor, ActorContext
from eventador.actors.records import ActorMetrics, DeadLetter, Failure
from eventador.actors.ref import ActorRef
from eventador.actors.supervision import Directive, Supervisor
from eventador.actors.system import ActorSystem, LocalActorSystem

__all__ = [
    "Actor",
    "ActorContext",
    "ActorMetrics",
    "ActorRef",
    "ActorSystem",
    "DeadLetter",
    "Directive",
    "Failure",
    "LocalActorSystem",
    "Supervisor",
]
