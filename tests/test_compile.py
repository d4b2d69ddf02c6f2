"""torch.compile: the block loop traces into one graph, and new input sizes reuse it (dynamic shapes)."""
import pytest
import torch

from hat import HAT
from tests.conftest import TINY_CONFIG

#: One residual group (a regular and a shifted HAB, then OCAB): every block kind, traced quickly.
ONE_GROUP_CONFIG = dict(TINY_CONFIG, depths=[2], num_heads=[3])


def body_break_frames(explanation) -> list[str]:
    """Source files of every graph break that is not the eager pad/crop around the compiled body."""
    frames = []
    for reason in explanation.break_reasons:
        names = {frame.name for frame in reason.user_stack}
        if not names & {'_pad_input', '_crop_output'} and 'torch.compiler.disable' not in reason.reason:
            frames.extend(f'{frame.filename}:{frame.lineno}' for frame in reason.user_stack)
    return frames


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train-checkpointed'])
def test_body_traces_to_a_single_graph(training):
    torch.manual_seed(0)
    model = HAT(**TINY_CONFIG).train(training)
    model.set_grad_checkpointing(training)
    x = torch.rand(2, 3, 20, 24)  # needs padding: 24 x 24
    with torch.set_grad_enabled(training):
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_count == 1
    assert body_break_frames(explanation) == []
    graph = explanation.graphs[0]
    if training:  # each of the 6 blocks is one checkpointed region inside the graph
        assert sum(name.startswith('wrap_body') for name, _ in graph.named_children()) == 6
    else:  # the blocks are inside the graph, not run eagerly
        assert explanation.op_count > 200


def test_new_input_sizes_reuse_the_dynamic_graph():
    torch.manual_seed(0)
    model = HAT(**ONE_GROUP_CONFIG).eval()
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend, dynamic=True)
    with torch.no_grad():
        for size in [(88, 96), (120, 90), (97, 130)]:  # window multiples and not
            x = torch.rand(1, 3, *size)
            assert torch.equal(compiled(x), model(x))
            if size == (88, 96):
                first_size_graphs = len(graphs)
    assert len(graphs) == first_size_graphs
    assert max(len(gm.graph.nodes) for gm in graphs) > 100  # the body, not just the size arithmetic
    torch._dynamo.reset()
