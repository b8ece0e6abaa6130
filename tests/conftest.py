pytest_plugins = ["tests.peers.node_smsc", "tests.peers.simulator_peer"]
