"""Check the ``ofa`` and ``autoformer`` networks against the reference code they reproduce.

For the largest, the smallest and a few sampled archs of each space, builds the network with the
authors' own code, copies our (seeded, BN/LN-randomised) weights into it, and reports both parameter
counts and the largest output difference on a random batch. Needs checkouts of
github.com/mit-han-lab/once-for-all and github.com/microsoft/Cream (nothing is installed from them;
their unused dataloader / torch._six imports are stubbed). Results and the command: docs/spaces.md.

    python benchmarks/check_spaces_reference.py --ofa PATH/once-for-all --cream PATH/Cream
"""

from __future__ import annotations

import argparse
import collections.abc
import json
import sys
import types
from pathlib import Path

import torch

from hwlat.spaces import get_space


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_ofa(repo: Path, samples: int) -> None:
    sys.path.insert(0, str(repo))
    sys.modules["ofa.utils.my_dataloader"] = types.ModuleType("ofa.utils.my_dataloader")  # torchvision, PIL
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    space = get_space("ofa")
    supernet = OFAMobileNetV3(dropout_rate=0, width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                              depth_list=[2, 3, 4])
    archs = [json.dumps({"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224}),
             json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 128}), *space.sample(samples, seed=3)]
    for arch in archs:
        a = json.loads(arch)
        supernet.set_active_subnet(ks=a["ks"], e=a["e"], d=a["d"])
        ref = supernet.get_active_subnet(preserve_weight=False).eval()
        ours = space.build(arch)
        theirs, mine = ref.state_dict(), ours.state_dict()
        assert [v.shape for v in theirs.values()] == [v.shape for v in mine.values()], "layer layout differs"
        ref.load_state_dict(dict(zip(theirs, mine.values(), strict=True)))
        x = torch.randn(2, 3, a["r"], a["r"])
        with torch.no_grad():
            diff = (ref(x) - ours(x)).abs().max().item()
        print(f"ofa d={a['d']} r={a['r']}: params OFA {count(ref):,} ours {count(ours):,}, max |out diff| {diff:.3g}")


def check_autoformer(repo: Path, samples: int) -> None:
    sys.path.insert(0, str(repo / "AutoFormer"))
    six = types.ModuleType("torch._six")
    six.container_abcs = collections.abc  # removed from torch; AutoFormer's model/utils.py imports it
    sys.modules["torch._six"] = six
    from model.supernet_transformer import Vision_TransformerSuper

    space = get_space("autoformer")
    sup = Vision_TransformerSuper(img_size=224, patch_size=16, embed_dim=256, depth=14, num_heads=4, mlp_ratio=4.0,
                                  qkv_bias=True, gp=True, num_classes=1000, relative_position=False,
                                  change_qkv=True).eval()
    archs = [json.dumps({"embed": 192, "depth": 12, "mlp": [3.5] * 12, "heads": [3] * 12}),
             json.dumps({"embed": 240, "depth": 14, "mlp": [4.0] * 14, "heads": [4] * 14}),
             *space.sample(samples, seed=1)]
    for arch in archs:
        a = json.loads(arch)
        e = a["embed"]
        config = {"embed_dim": [e] * a["depth"], "mlp_ratio": a["mlp"], "num_heads": a["heads"],
                  "layer_num": a["depth"]}
        n_ref = sup.get_sampled_params_numel(config)
        ours = space.build(arch)
        with torch.no_grad():  # our weights into the supernet's slices (its qkv rows are interleaved, bias not)
            sup.patch_embed_super.proj.weight[:e].copy_(ours.patch_embed.weight)
            sup.patch_embed_super.proj.bias[:e].copy_(ours.patch_embed.bias)
            sup.cls_token[..., :e].copy_(ours.cls_token)
            sup.pos_embed[..., :e].copy_(ours.pos_embed)
            for blk, layer, heads in zip(sup.blocks, ours.layers, a["heads"], strict=False):
                q, hidden = heads * 64, layer.ffn[0].out_features
                for norm, mine in ((blk.attn_layer_norm, layer.attn_norm), (blk.ffn_layer_norm, layer.ffn_norm)):
                    norm.weight[:e].copy_(mine.weight)
                    norm.bias[:e].copy_(mine.bias)
                for i in range(3):
                    blk.attn.qkv.weight[i:3 * q:3, :e].copy_(layer.attn.qkv.weight[i * q:(i + 1) * q])
                blk.attn.qkv.bias[:3 * q].copy_(layer.attn.qkv.bias)
                blk.attn.proj.weight[:e, :q].copy_(layer.attn.proj.weight)
                blk.attn.proj.bias[:e].copy_(layer.attn.proj.bias)
                blk.fc1.weight[:hidden, :e].copy_(layer.ffn[0].weight)
                blk.fc1.bias[:hidden].copy_(layer.ffn[0].bias)
                blk.fc2.weight[:e, :hidden].copy_(layer.ffn[2].weight)
                blk.fc2.bias[:e].copy_(layer.ffn[2].bias)
            sup.norm.weight[:e].copy_(ours.norm.weight)
            sup.norm.bias[:e].copy_(ours.norm.bias)
            sup.head.weight[:, :e].copy_(ours.head.weight)
            sup.head.bias.copy_(ours.head.bias)
            sup.set_sample_config(config)
            x = torch.randn(2, 3, 224, 224)
            diff = (sup(x) - ours(x)).abs().max().item()
        print(f"autoformer embed={e} depth={a['depth']}: params AutoFormer {n_ref:,} ours {count(ours):,}, "
              f"max |out diff| {diff:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ofa", type=Path, help="once-for-all checkout")
    parser.add_argument("--cream", type=Path, help="microsoft/Cream checkout (holds AutoFormer/)")
    parser.add_argument("--samples", type=int, default=4, help="sampled archs per space besides max and min")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.ofa:
        check_ofa(args.ofa, args.samples)
    if args.cream:
        check_autoformer(args.cream, args.samples)


if __name__ == "__main__":
    main()
