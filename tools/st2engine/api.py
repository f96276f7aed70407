"""StackStorm's API (st2api) over a Stack's database: its WSGI app, served or driven in-process.

st2api's webhook and timer controllers start a trigger watcher when they are imported: a
RabbitMQ consumer of trigger create/update/delete events. There is no broker here (the Stack
delivers in-process), so `app()` stops those consumers before they connect and loads the
triggers from the database with the watchers' own code, as they do at start.
"""
import logging

LOG = logging.getLogger(__name__)


def _quiet_watchers():
    import eventlet
    from st2api.controllers.v1 import timers, webhooks
    for controller in (webhooks.webhooks_controller, timers.timers_controller):
        watcher = controller._trigger_watcher
        eventlet.kill(watcher._updates_thread)  # before its first run: it never connects
    # This Stack's webhooks, not those of a Stack booted earlier in the process.
    webhooks.webhooks_controller._hooks = webhooks.HooksHolder()
    webhooks.webhooks_controller._trigger_watcher._load_triggers_from_db()


def app():
    """st2api's app (`st2api.app.setup_app`: router, controllers, middleware; auth as
    configured). Call it after the Stack has booted: the controllers read its database."""
    from st2api.app import setup_app
    application = setup_app()
    _quiet_watchers()
    return application


def serve(stack):
    """The app served on 127.0.0.1 by eventlet's WSGI server in a green thread, as `st2api`
    serves it (st2api/cmd/api.py). `auth.api_url` points at it, so StackStorm's API clients in
    this process (a sensor's SensorDatastoreService) reach it. Returns its base URL; `stop`
    (and the Stack's shutdown) ends it."""
    import eventlet
    from eventlet import wsgi
    from oslo_config import cfg
    served = getattr(stack, "_api", None)
    if served is not None:
        return served["url"]
    sock = eventlet.listen(("127.0.0.1", 0))
    url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    thread = eventlet.spawn(wsgi.server, sock, app(), log=LOG, log_output=False)
    stack._api = {"url": url, "socket": sock, "thread": thread,
                  "api_url": cfg.CONF.auth.api_url}
    cfg.CONF.set_override("api_url", url, group="auth")
    return url


def stop(stack):
    from oslo_config import cfg
    served, stack._api = getattr(stack, "_api", None), None
    if served is None:
        return
    served["thread"].kill()
    served["socket"].close()
    cfg.CONF.set_override("api_url", served["api_url"], group="auth")


def rerun(execution_id, tasks=None, parameters=None, user="stanley"):
    """`st2 execution re-run <id> [--tasks t ...] [k=v ...]`: StackStorm's API controller
    (ActionExecutionReRunController.post) schedules a new execution of the same action with
    the old parameters (merged with `parameters`); with `tasks`, an Orquesta workflow is rerun
    from those tasks (a with-items task reruns its failed and unrun items). The new id."""
    from st2api.controllers.v1.actionexecutions import ActionExecutionReRunController
    from st2common.models.db.auth import UserDB
    spec = ActionExecutionReRunController.ExecutionSpecificationAPI(
        parameters=parameters, tasks=tasks)
    response = ActionExecutionReRunController().post(
        spec, str(execution_id), requester_user=UserDB(name=user))
    return str(response.json["id"])
