"""The pack's sensors with StackStorm's sensor service, as the sensor container runs them."""
import copy
import logging
import os

from tools.st2engine.paths import PACK_REF


def sensor(sensor_cls, config=None, poll_interval=60):
    """An instance of a sensor class of the pack, set up: its service is StackStorm's
    `SensorService` (so `dispatch` is StackStorm's: payload validated against the trigger type,
    dropped when invalid, else to the rules engine), with st2tests' `MockDatastoreService` for
    the datastore (the real one talks to st2api over HTTP: `sensor_wrapper`). `config`: the
    pack config (default: the registered one, loaded by StackStorm's ContentPackConfigLoader
    as the sensor wrapper loads it). The sensor logs to `st2.email_retraction.sensor.*`."""
    from st2reactor.container.sensor_wrapper import SensorService
    from st2tests.mocks.datastore import MockDatastoreService
    from st2tests.mocks.sensor import MockSensorWrapper
    name = sensor_cls.__name__
    wrapper = MockSensorWrapper(PACK_REF, name)
    wrapper._logger = logging.getLogger("%s.sensor" % PACK_REF)
    service = SensorService(wrapper)
    service._datastore_service = MockDatastoreService(
        logger=wrapper._logger, pack_name=PACK_REF, class_name=name)
    if config is None:
        from st2common.util.config_loader import ContentPackConfigLoader
        config = ContentPackConfigLoader(pack_name=PACK_REF).get_config()
    instance = sensor_cls(sensor_service=service, config=copy.deepcopy(config),
                          poll_interval=poll_interval)
    instance.setup()
    return instance


def observe(service, seen):
    """Call `seen(trigger, payload)` for every trigger a sensor hands its service, then let
    StackStorm's `dispatch` do what it does (validate, drop or publish) unchanged."""
    dispatch = service.dispatch

    def observed(trigger, payload=None, trace_tag=None):
        seen(trigger, payload)
        return dispatch(trigger, payload=payload, trace_tag=trace_tag)

    service.dispatch = observed


def sensor_wrapper(stack, ref):
    """The registered sensor `ref` (e.g. `email_retraction.VerdictSensor`) as StackStorm's
    sensor container starts it: the container's sensor object (`_to_sensor_object` of
    st2reactor's SensorContainerManager) and `SensorWrapper` with the arguments the container
    gives its wrapper process (`--config-file` of the container, here an empty st2.conf: the
    Stack's configuration holds every setting). The wrapper parses the config, connects the
    database, loads the pack config (ContentPackConfigLoader: schema defaults, st2kv), loads
    the class and gives it a `SensorService` (TriggerDispatcherService; SensorDatastoreService,
    which creates a token in the database and calls the API of `stack.serve_api()`). Returns
    the wrapper; the sensor is `wrapper._sensor_instance`.

    Left out, because they belong to the separate sensor process: `wrapper.run()` (the caller
    steps setup/poll/cleanup itself), its trigger watcher (a RabbitMQ consumer of trigger CUD
    events) and its `logging.setup` (a process-wide logging file config that redirects
    stderr)."""
    from mock import patch
    from st2common.persistence.sensor import SensorType
    from st2reactor.container import sensor_wrapper as st2_sensor_wrapper
    from st2reactor.container.manager import SensorContainerManager
    from st2reactor.container.partitioners import DefaultPartitioner

    manager = SensorContainerManager(DefaultPartitioner(sensor_node_name="sensornode1"))
    found = manager._to_sensor_object(SensorType.get_by_ref(ref))
    st2_conf = os.path.join(stack.work_dir, "st2.conf")
    if not os.path.exists(st2_conf):
        with open(st2_conf, "w") as handle:
            handle.write("# The sensor processes' --config-file: Stack sets every option.\n")
    with patch.object(st2_sensor_wrapper.logging, "setup"):
        return st2_sensor_wrapper.SensorWrapper(
            pack=found["pack"], file_path=found["file_path"],
            class_name=found["class_name"], trigger_types=found["trigger_types"],
            poll_interval=found["poll_interval"], parent_args=["--config-file", st2_conf],
            db_ensure_indexes=False)
