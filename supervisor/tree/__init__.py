"""The supervision tree. Modules, each importing only those listed before it:

- ``spec``: what to run and under which policy (attrs models).
- ``lifecycle``: the lifecycle table, the only place that says which moves are legal.
- ``policy``: restart-intensity windows. ``journal``: the event and log rings.
- ``spawn``: starting OS processes. ``descendants``: what they started, and leftovers.
  ``logfile``: a process child's output as a rotated plain text file.
- ``children``: runners, one per child kind (task, process, service).
- ``decisions``: pure functions deciding restarts, escalations, groups, dependencies.
- ``context``: what one tree shares (``Tree``: clock, journals, ids, state publication).
- ``model``: child records, supervisor levels and the one transition path (``fire``).
- ``state``: the DashboardState model. ``health``: heartbeats and staleness.
  ``resources``: CPU, memory, descriptors and threads of process children, sampled.
- ``shutdown``: stopping a child, a level, the whole tree (staged, with its phases).
- ``supervision``: starting, exits, restarts, escalation; nested supervisors.
- ``specdiff``: what a new spec changes (pure). ``reconfigure``: applying it (reload).
- ``commands``: operator commands. ``runtime``: the ``Supervisor`` service.
"""
