"""Jobs that can never start: SLURM's reason table, the site-fact parsers and the one-line
messages, on output captured from the test cluster (tests/samples/slurm/, see its README).
No cluster needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from remote_kernels.schedulers import JobState, JobStatus, Resources
from remote_kernels.schedulers import limits as L
from remote_kernels.schedulers.slurm import Slurm
from remote_kernels.schedulers.slurm_facts import expand_hostlist, parse_job, scontrol_records

SAMPLES = Path(__file__).parent / "samples" / "slurm"
SLURM = Slurm()


def read(name: str) -> str:
    return (SAMPLES / name).read_text()


def facts(job: str = "", qos: str = "") -> L.SiteFacts:
    return Slurm.parse_facts(read("scontrol-show-partition.txt"), read("scontrol-show-node.txt"), job, qos)


# Every pending reason SLURM 22.05 prints (job_reason_string), by verdict.
NEVER = {
    L.TIME: ["PartitionTimeLimit"], L.NODES: ["PartitionNodeLimit"], L.PARTITION_CONFIG: ["PartitionConfig"],
    L.MEM_PER: ["MaxMemPerLimit"], L.CONSTRAINT: ["BadConstraints"], L.DEPENDENCY: ["DependencyNeverSatisfied"],
    L.RESERVATION: ["ReservationDeleted"], L.ACCOUNT: ["InvalidAccount", "AccountNotAllowed"],
    L.QOS: ["InvalidQOS", "QOSNotAllowed"],
    L.QOS_LIMIT: """QOSMaxBBPerJob QOSMaxBBPerNode QOSMaxBillingMinutesPerJob QOSMaxBillingPerJob QOSMaxBillingPerNode
        QOSMaxCpuMinutesPerJobLimit QOSMaxCpuPerJobLimit QOSMaxCpuPerNode QOSMaxEnergyMinutesPerJob QOSMaxEnergyPerJob
        QOSMaxEnergyPerNode QOSMaxGRESMinutesPerJob QOSMaxGRESPerJob QOSMaxGRESPerNode QOSMaxLicenseMinutesPerJob
        QOSMaxLicensePerJob QOSMaxMemoryMinutesPerJob QOSMaxMemoryPerJob QOSMaxMemoryPerNode QOSMaxNodeMinutesPerJob
        QOSMaxNodePerJobLimit QOSMaxUnknownMinutesPerJob QOSMaxUnknownPerJob QOSMaxUnknownPerNode
        QOSMaxWallDurationPerJobLimit QOSMinBB QOSMinBilling QOSMinCpuNotSatisfied QOSMinEnergy QOSMinGRES
        QOSMinLicense QOSMinMemory QOSMinNode QOSMinUnknown MaxWallDurationPerJobLimit""".split(),
    L.ASSOC_LIMIT: """AssocMaxBBMinutesPerJob AssocMaxBBPerJob AssocMaxBBPerNode AssocMaxBillingMinutesPerJob
        AssocMaxBillingPerJob AssocMaxBillingPerNode AssocMaxCpuMinutesPerJobLimit AssocMaxCpuPerJobLimit
        AssocMaxCpuPerNode AssocMaxEnergyMinutesPerJob AssocMaxEnergyPerJob AssocMaxEnergyPerNode
        AssocMaxGRESMinutesPerJob AssocMaxGRESPerJob AssocMaxGRESPerNode AssocMaxLicenseMinutesPerJob
        AssocMaxLicensePerJob AssocMaxMemMinutesPerJob AssocMaxMemPerJob AssocMaxMemPerNode AssocMaxNodeMinutesPerJob
        AssocMaxNodePerJobLimit AssocMaxUnknownMinutesPerJob AssocMaxUnknownPerJob AssocMaxUnknownPerNode
        AssocMaxWallDurationPerJobLimit""".split(),
    L.NODELIST: ["ReqNodeNotAvail, UnavailableNodes:c9"],   # a verdict only once the facts say c9 is unknown
}
WAITED = """AccountingPolicy AssocGrpBB AssocGrpBBMinutes AssocGrpBBRunMinutes AssocGrpBilling AssocGrpBillingMinutes
    AssocGrpBillingRunMinutes AssocGrpCPUMinutesLimit AssocGrpCPURunMinutesLimit AssocGrpCpuLimit AssocGrpEnergy
    AssocGrpEnergyMinutes AssocGrpEnergyRunMinutes AssocGrpGRES AssocGrpGRESMinutes AssocGrpGRESRunMinutes
    AssocGrpLicense AssocGrpLicenseMinutes AssocGrpLicenseRunMinutes AssocGrpMemLimit AssocGrpMemMinutes
    AssocGrpMemRunMinutes AssocGrpNodeLimit AssocGrpNodeMinutes AssocGrpNodeRunMinutes AssocGrpSubmitJobsLimit
    AssocGrpUnknown AssocGrpUnknownMinutes AssocGrpUnknownRunMinutes AssocGrpWallLimit AssocMaxJobsLimit
    AssocMaxSubmitJobLimit AssociationJobLimit AssociationResourceLimit AssociationTimeLimit BeginTime
    BlockFreeAction BlockMaxError BurstBufferOperation BurstBufferResources BurstBufferStageIn Cleaning DeadLine
    Dependency FedJobLock FrontEndDown InactiveLimit JobArrayTaskLimit JobHeldAdmin JobHeldUser JobHoldMaxRequeue
    JobLaunchFailure Licenses MaxBBPerAccount MaxBillingPerAccount MaxCpuPerAccount MaxEnergyPerAccount
    MaxGRESPerAccount MaxJobsPerAccount MaxLicensePerAccount MaxMemoryPerAccount MaxNodePerAccount
    MaxSubmitJobsPerAccount MaxUnknownPerAccount NodeDown NonZeroExitCode None OutOfMemory PartitionDown
    PartitionInactive PowerNotAvail PowerReserved Priority Prolog QOSGrpBB QOSGrpBBMinutes QOSGrpBBRunMinutes
    QOSGrpBilling QOSGrpBillingMinutes QOSGrpBillingRunMinutes QOSGrpCPUMinutesLimit QOSGrpCPURunMinutesLimit
    QOSGrpCpuLimit QOSGrpEnergy QOSGrpEnergyMinutes QOSGrpEnergyRunMinutes QOSGrpGRES QOSGrpGRESMinutes
    QOSGrpGRESRunMinutes QOSGrpLicense QOSGrpLicenseMinutes QOSGrpLicenseRunMinutes QOSGrpMemLimit
    QOSGrpMemoryMinutes QOSGrpMemoryRunMinutes QOSGrpNodeLimit QOSGrpNodeMinutes QOSGrpNodeRunMinutes
    QOSGrpSubmitJobsLimit QOSGrpUnknown QOSGrpUnknownMinutes QOSGrpUnknownRunMinutes QOSGrpWallLimit QOSJobLimit
    QOSMaxBBPerUser QOSMaxBillingPerUser QOSMaxCpuPerUserLimit QOSMaxEnergyPerUser QOSMaxGRESPerUser
    QOSMaxJobsPerUserLimit QOSMaxLicensePerUser QOSMaxMemoryPerUser QOSMaxNodePerUserLimit
    QOSMaxSubmitJobPerUserLimit QOSMaxUnknownPerUser QOSResourceLimit QOSTimeLimit QOSUsageThreshold
    ReqNodeNotAvail Reservation Resources SchedDefer SystemFailure TimeLimit""".split() + [
    "ReqNodeNotAvail, Reserved for maintenance", "ReqNodeNotAvail, May be reserved for other job"]


@pytest.mark.parametrize("kind, reason", [(k, r) for k, rs in NEVER.items() for r in rs])
def test_permanent_reasons_are_never(kind, reason):
    assert SLURM.never(JobStatus(JobState.QUEUED, reason)) == kind


@pytest.mark.parametrize("reason", WAITED)
def test_reasons_that_clear_with_time_are_waited_out(reason):
    assert SLURM.never(JobStatus(JobState.QUEUED, reason)) is None


def test_only_a_waiting_job_can_be_never():
    assert SLURM.never(JobStatus(JobState.RUNNING, "PartitionTimeLimit")) is None
    assert SLURM.never(JobStatus(JobState.HELD, "InvalidQOS")) == L.QOS


def test_captured_squeue_reasons_and_estimated_start():
    st = Slurm.parse_status(read("squeue-pending.txt"))
    waiting, never = (next(s for s in st.values() if s.reason == r) for r in ("Resources", "PartitionTimeLimit"))
    assert waiting.start_time.startswith("20") and SLURM.never(waiting) is None
    assert never.start_time is None and SLURM.never(never) == L.TIME


def test_scontrol_records_keep_values_with_spaces_and_equals_signs():
    node = scontrol_records(read("scontrol-show-node.txt"))[0]
    assert node["OS"].startswith("Linux ") and " " in node["OS"]
    assert node["CfgTRES"] == "cpu=8,mem=4G,billing=8" and node["RealMemory"] == "4096"


def test_captured_partitions_and_nodes():
    f = facts()
    assert list(f.partitions) == ["debug", "long", "urgent"]
    debug, long = f.partitions["debug"], f.partitions["long"]
    assert debug.default and debug.max_time == 4 * 3600 and debug.nodes == ("c1", "c2") and debug.max_nodes is None
    assert long.max_time == 7 * 86400 and long.nodes == ("c2",) and not long.default
    assert {n: (f.nodes[n].cpus, f.nodes[n].mem) for n in f.nodes} == {"c1": (8, 4096), "c2": (8, 4096)}


def test_captured_job_record_is_the_effective_request():
    ask = parse_job(read("scontrol-show-job-timelimit.txt"))
    assert (ask.partition, ask.time, ask.cpus, ask.mem, ask.nodes) == ("debug", 36000, 2, 1024, 1)
    assert ask.account == "" and ask.qos == ""   # (null): no accounting on the test cluster


@pytest.mark.parametrize("text, hosts", [("c1", ["c1"]), ("c[1-2]", ["c1", "c2"]),
                                         ("n[07-09,12],gpu1", ["n07", "n08", "n09", "n12", "gpu1"])])
def test_expand_hostlist(text, hosts):
    assert expand_hostlist(text) == hosts


# (kind, the scheduler's words, request, expected line); facts: the captured cluster.
MESSAGES = [
    (L.TIME, "PartitionTimeLimit", Resources(partition="debug", time="10:00:00"),
     "partition debug allows at most 4:00:00 (asked for 10:00:00); ask for less with --time or RK_TIME, "
     "or use partition long"),
    (L.TIME, "PartitionTimeLimit", Resources(time="2:00:00", partition="urgent"),
     "partition urgent allows at most 1:00:00 (asked for 2:00:00); ask for less with --time or RK_TIME, "
     "or use partition debug or long"),
    (L.PARTITION_CONFIG, "PartitionConfig", Resources(time="5-00:00:00"),   # the default partition: debug
     "partition debug allows at most 4:00:00 (asked for 5-00:00:00); ask for less with --time or RK_TIME, "
     "or use partition long"),
    (L.PARTITION_CONFIG, "PartitionConfig", Resources(partition="long", cpus=12),
     "no node of partition long has 12 CPUs (the largest has 8); ask for fewer with --cpus or RK_CPUS"),
    (L.PARTITION_CONFIG, "PartitionConfig", Resources(partition="debug"),
     "partition debug does not take this job as asked (its access or size limits); change the spec's request "
     "(`scontrol show partition debug` shows them)"),
    (L.CPUS, "CPU count per node can not be satisfied", Resources(partition="debug", cpus=16),
     "no node of partition debug has 16 CPUs (the largest has 8); ask for fewer with --cpus or RK_CPUS"),
    (L.MEM, "Memory specification can not be satisfied", Resources(mem="6000M"),
     "no node of partition debug has 6000M of memory for a job (the largest has 4G); ask for less with "
     "--mem or RK_MEM"),
    (L.MEM_PER, "MaxMemPerLimit", Resources(), "partition debug allows at most less memory per node or CPU; "
     "ask for less with --mem or RK_MEM"),
    (L.PARTITION, "Invalid partition name specified", Resources(partition="gpu"),
     "partition gpu does not exist; choose one of debug, long, urgent with --partition or RK_PARTITION"),
    (L.NODES, "PartitionNodeLimit", Resources(), "partition debug takes jobs of 1 to unlimited nodes (asked for 1); "
     "a kernel needs one node: remove --nodes from the spec's directives, or use partition long or urgent"),
    (L.ACCOUNT, "InvalidAccount", Resources(account="proj9"),
     "account proj9 is not one you may use here; set one of yours with --account or RK_ACCOUNT "
     "(`sacctmgr show assoc user=$USER format=account,partition` lists them)"),
    (L.QOS, "InvalidQOS", Resources(qos="fast"),
     "QOS fast is not valid for you here; set one you may use with --qos or RK_QOS "
     "(`sacctmgr show assoc user=$USER format=qos` lists them)"),
    (L.CONSTRAINT, "Invalid feature specification", Resources(constraint="gpu"),
     "no node of partition debug has the features gpu (they have: none); change --constraint or RK_CONSTRAINT"),
    (L.GRES, "Invalid generic resource (gres) specification", Resources(gpus=1),
     "no node of partition debug has the GPUs or GRES asked for; change --gpus or RK_GPUS"),
    (L.RESERVATION, "Requested reservation is invalid", Resources(reservation="maint"),
     "reservation maint does not exist or was deleted; set another with --reservation or RK_RESERVATION "
     "(`scontrol show reservation` lists them)"),
    (L.DEPENDENCY, "DependencyNeverSatisfied", Resources(),
     "its dependency can never be satisfied; fix or remove --dependency in the spec's directives"),
    (L.ASSOC_LIMIT, "AssocMaxWallDurationPerJobLimit", Resources(account="proj1", time="3-0"),
     "account proj1's association allows wall time within a limit (AssocMaxWallDurationPerJobLimit) per job; "
     "ask for less with --time or RK_TIME, or use another account with --account or RK_ACCOUNT"),
    (L.NEVER, "Can Never Run: Insufficient amount of queue resource", Resources(),
     "change the spec's request (`remote-kernels show NAME` prints its batch script)"),
]


@pytest.mark.parametrize("kind, said, res, expected", MESSAGES, ids=[f"{m[0]}-{m[1][:24]}" for m in MESSAGES])
def test_one_line_names_the_limit_and_the_fix(kind, said, res, expected):
    line = SLURM.explain(kind, said, res, facts())
    assert line == expected and "\n" not in line


@pytest.mark.parametrize("reason, qos, expected", [
    ("QOSMaxWallDurationPerJobLimit", "short", "QOS short allows wall time up to 2:00:00 per job; ask for less "
     "with --time or RK_TIME, or use another QOS with --qos or RK_QOS"),
    ("QOSMaxCpuPerJobLimit", "short", "QOS short allows CPUs up to 4 per job; ask for less with --cpus or RK_CPUS, "
     "or use another QOS with --qos or RK_QOS"),
    ("QOSMaxMemoryPerJob", "short", "QOS short allows memory up to 8G per job; ask for less with --mem or RK_MEM, "
     "or use another QOS with --qos or RK_QOS"),
    ("QOSMaxGRESPerNode", "short", "QOS short allows GPUs and other GRES up to 1 per node; ask for less with "
     "--gpus or RK_GPUS, or use another QOS with --qos or RK_QOS"),
    ("QOSMinCpuNotSatisfied", "big", "QOS big requires CPUs at least 16 per job; ask for more with --cpus or "
     "RK_CPUS, or use another QOS with --qos or RK_QOS"),
    ("QOSMaxWallDurationPerJobLimit", "", "your QOS allows wall time within a limit (QOSMaxWallDurationPerJobLimit) "
     "per job; ask for less with --time or RK_TIME, or use another QOS with --qos or RK_QOS"),
])
def test_qos_limits_name_the_value_from_sacctmgr(reason, qos, expected):
    # sacctmgr-qos.txt is hand-written: the test cluster's QOS set no TRES limits (see the README).
    line = SLURM.explain(L.QOS_LIMIT, reason, Resources(qos=qos), facts(qos=read("sacctmgr-qos.txt")))
    assert line == expected


def test_captured_qos_wall_limit_names_the_qos_and_its_max_wall():
    """Captured with accounting on (slurmdbd): rkuser's job in account physics, QOS short
    (MaxWall 00:30:00), asking for an hour."""
    st = Slurm.parse_status(read("squeue-qoslimit.txt"))
    (job, status), = st.items()
    kind = SLURM.never(status)
    assert kind == L.QOS_LIMIT and status.reason == "QOSMaxWallDurationPerJobLimit"
    f = facts(job=read("scontrol-show-job-qoslimit.txt"), qos=read("sacctmgr-qos-captured.txt"))
    assert (f.ask.account, f.ask.qos, f.ask.time) == ("physics", "short", 3600)
    assert f.qos["short"].max_wall == 1800 and f.qos["normal"].max_wall is None
    assert SLURM.explain(kind, status.reason, Resources(), f) == (
        "QOS short allows wall time up to 0:30:00 per job; ask for less with --time or RK_TIME, or use another "
        "QOS with --qos or RK_QOS")


def test_invalid_qos_lists_the_known_ones():
    line = SLURM.explain(L.QOS, "InvalidQOS", Resources(qos="fast"), facts(qos=read("sacctmgr-qos.txt")))
    assert "(the QOS are normal, short, big)" in line


def test_unavailable_nodes_are_never_only_when_they_do_not_exist():
    f = facts()
    assert SLURM.explain(L.NODELIST, "ReqNodeNotAvail, UnavailableNodes:c[1-2]", Resources(), f) is None
    line = SLURM.explain(L.NODELIST, "ReqNodeNotAvail, UnavailableNodes:c[2-3]", Resources(), f)
    assert line.startswith("the spec names nodes that do not exist (c3 unknown to SLURM; the nodes are c1, c2)")
    assert SLURM.explain(L.NODELIST, "ReqNodeNotAvail, UnavailableNodes:c9", Resources(), L.SiteFacts()) is None


def test_captured_sbatch_refusals_name_their_limit():
    blocks = [b.strip().splitlines() for b in read("sbatch-refusals.txt").split("# sbatch --parsable ")[1:]]
    kinds = {block[0]: SLURM.refused("\n".join(block[1:])) for block in blocks}
    assert {args: k[0] for args, k in kinds.items()} == {
        "-p nosuch": L.PARTITION, "-p debug --cpus-per-task=16": L.CPUS, "-p debug --mem=8G": L.MEM,
        "--nodelist=c9": L.NODELIST, "--constraint=gpu": L.CONSTRAINT, "--gres=gpu:1": L.GRES,
        "-p long --nodelist=c1": L.PARTITION_CONFIG, "--reservation=nosuch": L.RESERVATION,
        "--account=nosuch": L.ACCOUNT, "--qos=nosuch": L.QOS, "--account=chemistry --qos=short": L.QOS}
    assert SLURM.refused("sbatch: error: Batch job submission failed: Socket timed out") is None


def test_missing_facts_give_a_vaguer_line_not_an_error():
    for kind in (L.TIME, L.CPUS, L.MEM, L.MEM_PER, L.NODES, L.PARTITION, L.PARTITION_CONFIG, L.ACCOUNT, L.QOS,
                 L.QOS_LIMIT, L.ASSOC_LIMIT, L.CONSTRAINT, L.GRES, L.RESERVATION, L.DEPENDENCY, L.NEVER):
        line = L.explain(kind, "Whatever", Resources(time="1:00:00", cpus=2, mem="1G"), L.SiteFacts())
        assert line and "\n" not in line and ("--" in line or "change" in line), (kind, line)


def test_wall_and_size():
    assert [L.wall(s) for s in (59, 14400, 36000, 86400 * 7)] == ["0:00:59", "4:00:00", "10:00:00", "7-00:00:00"]
    assert [L.size(m) for m in (512, 1024, 4096, 6000)] == ["512M", "1G", "4G", "6000M"]


# --- a request checked without a job (remote-kernels install) ---------------------------------
# The test cluster's accounting (cluster.py's associations), as sacctmgr prints them: hand-written.
ASSOC = "rkcluster|physics||normal,short|\nrkcluster|chemistry||normal|\nother|biology||normal|\n"
CONFIG = "ClusterName = rkcluster\nAccountingStorageType = accounting_storage/slurmdbd\n" \
         "AccountingStorageEnforce = associations,limits,qos\n"


def site(enforce: str = "associations,limits,qos") -> L.SiteFacts:
    from remote_kernels.schedulers.slurm_facts import parse_accounting, parse_config
    f = facts(qos=read("sacctmgr-qos-captured.txt"))
    f.accounting = parse_accounting(parse_config(CONFIG.replace("associations,limits,qos", enforce)), ASSOC,
                                    "physics\n")
    return f


def test_accounting_facts_parse():
    acct = site().accounting
    assert acct.enforce == {"associations", "limits", "qos"} and acct.default_account == "physics"
    assert [(x.account, x.qos) for x in acct.assocs] == [("physics", ("normal", "short")), ("chemistry", ("normal",))]


@pytest.mark.parametrize("res, kind, said", [
    (Resources(partition="debug", time="10:00:00"), L.TIME, "partition"),
    (Resources(cpus=9), L.CPUS, "partition"),
    (Resources(partition="long", mem="5G"), L.MEM, "partition"),
    (Resources(gpus=1), L.GRES, "partition"),
    (Resources(partition="gpu"), L.PARTITION, "partition"),
    (Resources(account="biology"), L.ACCOUNT, "account"),          # another cluster's association
    (Resources(qos="big"), L.QOS, "qos"),
    (Resources(account="chemistry", qos="short"), L.QOS, "qos"),
    (Resources(qos="short", time="31"), L.QOS_LIMIT, "QOSMaxWallDurationPerJobLimit"),   # default account physics
])
def test_broken_names_the_first_limit(res, kind, said):
    found = L.broken(res, site())
    assert (found.kind, found.said) == (kind, said)
    assert SLURM.check(res, site()) == L.explain(kind, said, res, found.facts)


@pytest.mark.parametrize("res", [Resources(), Resources(partition="debug", time="4:00:00", cpus=8, mem="4G"),
                                 Resources(partition="long", time="7-0"), Resources(account="chemistry"),
                                 Resources(qos="short", time="30"), Resources(partition="urgent", time="1:00:00")])
def test_requests_within_the_limits_pass(res):
    assert L.broken(res, site()) is None


def test_unenforced_or_unknown_accounting_is_not_checked():
    for f in (site(enforce="none"), facts()):
        assert L.broken(Resources(account="nosuch", qos="nosuch"), f) is None
    assert L.broken(Resources(qos="nosuch"), site(enforce="associations")) is None   # QOS not enforced
    assert L.broken(Resources(qos="short", time="1:00:00"), site(enforce="associations,qos")) is None


def test_qos_tres_limits_are_checked():
    f = site()
    f.qos["short"].max_tres = {"cpu": "4", "mem": "2G", "gres/gpu": "1"}
    assert L.broken(Resources(qos="short", cpus=5), f).said == "QOSMaxCpuPerJobLimit"
    assert L.broken(Resources(qos="short", mem="3G"), f).said == "QOSMaxMemoryPerJob"
    assert SLURM.check(Resources(qos="short", cpus=5), f) == (
        "QOS short allows CPUs up to 4 per job; ask for less with --cpus or RK_CPUS, or use another QOS with "
        "--qos or RK_QOS")


def test_gpu_count_of_node_gres():
    from remote_kernels.schedulers.slurm_facts import gpu_count
    assert [gpu_count(g) for g in ("(null)", "gpu:2", "gpu:a100:4(S:0-1),gpu:v100:1", "mps:100,gpu:1")] == [0, 2, 5, 1]


def test_directives_that_change_the_request_skip_the_check():
    assert SLURM.checkable(Resources(directives=["--exclusive", "--mail-type=END"])) is None
    for d in ("--partition=long", "-p long", "#SBATCH --time=5:00:00", "-c4", "--mem-per-cpu=1G", "-A proj"):
        assert SLURM.checkable(Resources(directives=[d])), d


def test_a_partition_that_allows_some_accounts_takes_a_request_without_one():
    """No --account or --qos: the user's defaults apply, which only the job record knows."""
    facts = L.SiteFacts(partitions={"phys": L.Partition("phys", default=True, allow_accounts="physics",
                                                        allow_qos="normal")})
    assert L.broken(Resources(partition="phys"), facts) is None
    assert L.broken(Resources(partition="phys", account="chemistry"), facts) is not None
