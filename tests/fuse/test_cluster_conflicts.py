"""Many hosts, one bucket (issue #17, item 2): two hosts writing the same new file on a SeaweedFS
cluster, both uploading at the same moment, keep both versions: one under the name, the other as
`NAME.storefs-conflict-HOST-TIME` (SeaweedFS's S3 gateway enforces If-None-Match, found by the probe).
The cluster and the two hosts are tests/fuse/test_cluster.py's."""
from __future__ import annotations

import os

import pytest

import tests.fuse.test_cluster as cluster_tests
from tests.fuse.test_conflicts import write_and_fsync_both

# One cluster for the module, on the worker of the other cluster tests (scripts/test.sh: loadgroup).
pytestmark = pytest.mark.xdist_group("seaweed-cluster")
cluster = cluster_tests.cluster   # the module-scoped fixture, used here by its name


@pytest.fixture
def hosts(tmp_path, cluster):
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
    pair = cluster_tests.Hosts(tmp_path, cluster, ("write_back=600",))
    yield pair
    pair.close()


def test_two_hosts_writing_one_new_file_keep_both_versions(hosts):
    datas = (b"host A's report", b"host B's report, written at the same time")
    settled = write_and_fsync_both(hosts, "report.txt", os.O_WRONLY | os.O_CREAT, datas, at_once=True)
    listed = hosts.client.list_objects_v2(Bucket=hosts.bucket).get("Contents", [])
    keys = sorted(o["Key"] for o in listed)
    copies = [key for key in keys if key.startswith("report.txt.storefs-conflict-")]
    assert "report.txt" in keys and len(copies) == 1, keys
    assert sorted([hosts.object("report.txt"), hosts.object(copies[0])]) == sorted(datas)
    reported = ["conflict" in env.run("status", str(mount.path), check=True).stdout
                for env, mount in zip(hosts.envs, (hosts.a, hosts.b))]
    assert sorted(reported) == [False, True]
    # Each host sees both files after the TTLs.
    for mount in (hosts.a, hosts.b):
        cluster_tests.eventually(lambda: {"report.txt", copies[0]} <= set(os.listdir(mount.path)), 10,
                                 "both versions listed on both hosts")
    print(f"\ncluster: two hosts creating one file settled in {settled * 1000:.0f} ms")
