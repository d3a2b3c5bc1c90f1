"""The pack loads in the real ComfyUI as a custom node folder and registers its nodes properly."""


def test_pack_imported_and_entrypoint_registered(host):
    assert hasattr(host.pack, "comfy_entrypoint")
    assert host.pack.WEB_DIRECTORY == "./js"
    ext = host.loop.run_until_complete(host.pack.comfy_entrypoint())
    nodes = host.loop.run_until_complete(ext.get_node_list())
    assert isinstance(nodes, list)
    for node_cls in nodes:
        schema = node_cls.GET_SCHEMA()
        assert schema.node_id.startswith("LoRALab"), schema.node_id
        assert schema.display_name.endswith(" (LoRA Lab)"), schema.display_name
        assert schema.category.startswith("LoRA Lab"), schema.category
        assert host.nodes.NODE_CLASS_MAPPINGS[schema.node_id] is node_cls

