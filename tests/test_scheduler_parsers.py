"""The non-SLURM adapters' parsers, headers, never-start verdicts and shared helpers, on the
samples in tests/samples/ (see its README for where each comes from).  No cluster needed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from remote_kernels.options import KernelOptions
from remote_kernels.schedulers import JobState, Resources, get_scheduler
from remote_kernels.schedulers._common import first_host, host_list, log_redirect, megabytes, seconds
from remote_kernels.schedulers.flux import Flux, decimal_id
from remote_kernels.schedulers.limits import NEVER, SiteFacts
from remote_kernels.schedulers.htcondor import HTCondor
from remote_kernels.schedulers.lsf import LSF
from remote_kernels.schedulers.pbs import PBSPro
from remote_kernels.schedulers.sge import SGE
from remote_kernels.schedulers.ssh import SSH, hosts
from remote_kernels.schedulers.torque import Torque
from remote_kernels.script import render

SAMPLES = Path(__file__).parent / "samples"
BANNER = "*** Welcome to the Example HPC Centre: maintenance on Friday 12 from 08:00 (ticket 4711) ***\n"

# Every submit-output variant we know, per adapter: (stdout, the id it must yield).
SUBMIT_OUTPUTS = {
    PBSPro: [   # qsub prints the job id alone (PBS Pro reference guide, qsub "Standard output")
        ("7001.pbs01\n", "7001.pbs01"),
        ("7001.pbs01.cluster.example.org\n", "7001.pbs01.cluster.example.org"),
        ("7002[].pbs01\n", "7002[].pbs01"),
        (BANNER + "7003.pbs01\n", "7003.pbs01"),
        ("qsub: warning: job will run in default project\n7004.pbs01\n", "7004.pbs01"),
    ],
    Torque: [   # Torque's qsub prints the id alone, server name included
        ("4101.torque01.example.org\n", "4101.torque01.example.org"),
        ("4102\n", "4102"),
        (BANNER + "4103.torque01\n", "4103.torque01"),
    ],
    SGE: [      # qsub -terse: the id alone; "ID.FIRST-LAST:STEP" for an array job (qsub(1))
        ("17\n", "17"),
        ("18.1-10:1\n", "18"),
        (BANNER + "19\n", "19"),
    ],
    LSF: [      # bsub's one sentence (IBM LSF 10.1, bsub)
        ("Job <5301> is submitted to queue <normal>.\n", "5301"),
        ("Job <5302> is submitted to default queue <short>.\n", "5302"),
        (BANNER + "Job <5303> is submitted to queue <gpu>.\n", "5303"),
        ("Warning: job memory limit is in MB\nJob <5304> is submitted to queue <normal>.\n", "5304"),
    ],
    HTCondor: [  # condor_submit -terse: "FIRST - LAST" job ids of the cluster
        ("812.0 - 812.0\n", "812.0"),
        (BANNER + "813.0 - 813.0\n", "813.0"),
    ],
    Flux: [     # flux batch prints the id: F58 (ƒ, or f outside UTF-8 locales), decimal kept as is
        ("ƒ2jFzN7bq\n", decimal_id("f2jFzN7bq")),
        ("f2jFzN7bq\n", decimal_id("f2jFzN7bq")),
        ("1099511627877\n", "1099511627877"),
        (BANNER + "fBrFvyLrP\n", decimal_id("fBrFvyLrP")),
    ],
}
# Outputs that carry a number but no job id in the expected form: refused, never guessed.
NOT_AN_ID = {
    PBSPro: ["", "Job submitted to server pbs01 as number 7001\n", BANNER],
    Torque: ["", "qsub: submit error (Bad UID for job execution MSG=ruserok failed)\n"],
    SGE: ["", 'Your job 17 ("rk-x") has been submitted\n', BANNER],
    LSF: ["", "Job not submitted.\n", "Job <5301> is not submitted to queue <normal>.\n", BANNER],
    HTCondor: ["", "Submitting job(s).\n1 job(s) submitted to cluster 812.\n"],
    Flux: ["", "flux-batch: ERROR: 3 errors in script\n", BANNER],
}


@pytest.mark.parametrize("adapter, stdout, job_id", [
    (a, out, job) for a, cases in SUBMIT_OUTPUTS.items() for out, job in cases],
    ids=lambda v: v.name if isinstance(v, type) else None)
def test_submit_output_variants(adapter, stdout, job_id):
    assert adapter.parse_job_id(stdout) == job_id


@pytest.mark.parametrize("adapter, stdout", [(a, out) for a, outs in NOT_AN_ID.items() for out in outs],
                         ids=lambda v: v.name if isinstance(v, type) else None)
def test_submit_output_without_an_id_is_refused(adapter, stdout):
    with pytest.raises(ValueError):
        adapter.parse_job_id(stdout)


def test_ssh_job_id_is_host_and_pid():
    assert SSH.parse_job_id("c1", "4242\n") == "c1:4242"
    assert SSH.parse_job_id("c1", BANNER + "4243\n") == "c1:4243"
    with pytest.raises(ValueError):
        SSH.parse_job_id("c1", BANNER)


def test_flux_f58_decodes_to_decimal():
    # F58 digits are base 58 over this alphabet: "2" is 1, "21" is 58.
    assert decimal_id("f2") == "1" and decimal_id("f21") == "58" and decimal_id("ƒ21") == "58"


def read(path: str) -> str:
    return (SAMPLES / path).read_text()


def test_pbs_states_reasons_and_exit_statuses():
    st = PBSPro.parse_status(read("pbs/qstat-f-F-json-x.json"))
    assert st["7001.pbs01"].state is JobState.QUEUED and "Insufficient" in st["7001.pbs01"].reason
    assert st["7001.pbs01"].start_time == "Wed Nov 25 12:30:00 2026"   # the estimate
    assert st["7002.pbs01"].state is JobState.HELD
    running = st["7003.pbs01"]
    assert running.state is JobState.RUNNING and running.node == "c2" and running.time_left == "00:47:30"
    assert running.reason == "" and running.start_time == "Wed Nov 25 10:47:30 2026"
    assert st["7004.pbs01"].state is JobState.RUNNING and st["7004.pbs01"].node == "c1"   # E is not final
    assert [st[f"700{i}.pbs01"].state for i in (5, 6, 7, 8, 9)] == [
        JobState.COMPLETED, JobState.CANCELLED, JobState.TIMEOUT, JobState.OOM, JobState.CANCELLED]


def test_torque_states_and_exit_statuses():
    st = Torque.parse_status(read("torque/qstat-x.xml"))
    job = "{}.torque01.example.org".format
    assert st[job(4101)].state is JobState.QUEUED and st[job(4101)].reason == "Not Running: not enough free nodes"
    assert st[job(4102)].state is JobState.HELD
    running = st[job(4103)]
    assert running.state is JobState.RUNNING and running.node == "c2" and running.time_left == "00:47:30"
    assert running.start_time.startswith("2026-11-25")
    assert [st[job(i)].state for i in (4104, 4105, 4106, 4107)] == [
        JobState.COMPLETED, JobState.CANCELLED, JobState.TIMEOUT, JobState.OOM]


def test_sge_captured_states():
    st = SGE.parse_status(read("sge/qstat-xml.xml"))
    assert st["5"].state is JobState.RUNNING and st["5"].node == "c2"
    assert st["5"].start_time == "2026-11-25T11:24:03"
    assert st["8"].state is JobState.SUSPENDED and st["8"].node == "c1"
    assert st["7"].state is JobState.QUEUED and st["7"].node is None
    assert st["6"].state is JobState.HELD and st["6"].native == "hqw"
    deleting = SGE.parse_status(read("sge/qstat-xml-deleting.xml"))
    assert deleting["5"].native == "dr" and deleting["5"].state is JobState.RUNNING   # not final yet
    error = SGE.parse_status(read("sge/qstat-xml-error.xml"))["17"]
    assert error.state is JobState.HELD and "error" in error.reason
    assert SGE.parse_status(read("sge/qstat-xml-empty.xml")) == {}


def test_lsf_states_reasons_and_not_found():
    st = LSF.parse_status(read("lsf/bjobs-json.json"))
    assert st["5301"].state is JobState.QUEUED and st["5301"].reason == "New job is waiting for scheduling"
    assert st["5302"].state is JobState.HELD
    running = st["5303"]
    assert running.state is JobState.RUNNING and running.node == "c2" and running.time_left == "0:47"
    assert [st[i].state for i in ("5304", "5305", "5306", "5307")] == [
        JobState.COMPLETED, JobState.CANCELLED, JobState.TIMEOUT, JobState.OOM]
    assert "5308" not in st   # "is not found": the caller reports it GONE


def test_htcondor_queue_and_history():
    q = HTCondor.parse_status(read("htcondor/condor_q-json.json"))
    assert q["812.0"].state is JobState.QUEUED and q["812.0"].node is None
    assert q["813.0"].state is JobState.RUNNING and q["813.0"].node == "c2.cluster.example"
    assert q["814.0"].state is JobState.HELD and "Permission denied" in q["814.0"].reason
    assert q["815.0"].state is JobState.SUSPENDED
    h = HTCondor.parse_status(read("htcondor/condor_history-json.json"))
    assert [h[f"80{i}.0"].state for i in (1, 2, 3, 4)] == [
        JobState.COMPLETED, JobState.CANCELLED, JobState.TIMEOUT, JobState.FAILED]
    assert h["801.0"].node == "c1.cluster.example"
    assert HTCondor.parse_status("") == {}


def test_flux_states_results_and_host_lists():
    st = Flux.parse_status(read("flux/flux-jobs.txt"))
    ids = [str(1099511627877 + i) for i in range(8)]
    assert [st[i].state for i in ids] == [
        JobState.QUEUED, JobState.HELD, JobState.RUNNING, JobState.RUNNING, JobState.COMPLETED,
        JobState.CANCELLED, JobState.TIMEOUT, JobState.FAILED]
    assert st[ids[2]].node == "c2" and st[ids[2]].time_left == "00:47:30"
    assert st[ids[3]].node == "c1"   # c[1-2]
    assert st[ids[5]].reason == "cancel: job canceled by user"


# --- jobs that can never start: only where the scheduler's own status says "never" ------------

def test_pbs_can_never_run_comment_is_never():
    st = PBSPro.parse_status(read("pbs/qstat-never.json"))
    assert PBSPro().never(st["7010.pbs01"]) == NEVER and st["7010.pbs01"].reason.startswith("Can Never Run: ")
    assert PBSPro().never(st["7011.pbs01"]) is None   # "Not Running: ..." waits for resources
    assert [PBSPro().never(j) for j in PBSPro.parse_status(read("pbs/qstat-f-F-json-x.json")).values()] == [None] * 9


def test_flux_unsatisfiable_request_is_never():
    st = Flux.parse_status(read("flux/flux-jobs-unsatisfiable.txt"))
    assert Flux().never(st["1099511627901"]) == NEVER and st["1099511627901"].state is JobState.FAILED
    assert Flux().never(st["1099511627902"]) is None
    assert all(Flux().never(j) is None for j in Flux.parse_status(read("flux/flux-jobs.txt")).values())


def test_sge_error_state_is_never_and_qstat_j_says_why():
    error = SGE.parse_status(read("sge/qstat-xml-error.xml"))["17"]
    assert SGE().never(error) == NEVER
    assert all(SGE().never(j) is None for j in SGE.parse_status(read("sge/qstat-xml.xml")).values())
    why = SGE.parse_error_reason(read("sge/qstat-j-error.txt"))
    assert why.startswith("11/25/2026 11:30:04 [1001:4242]: error: can't open output file") and "\n" not in why
    line = SGE().explain(NEVER, error.reason, Resources(), SiteFacts(detail=why))
    assert line.startswith(why + "; change the spec's request")


@pytest.mark.parametrize("adapter", [Torque, LSF, HTCondor, SSH])
def test_adapters_whose_status_never_says_never(adapter):
    """Their documented status has no "can never run" verdict: their jobs are waited out."""
    samples = {Torque: "torque/qstat-x.xml", LSF: "lsf/bjobs-json.json", HTCondor: "htcondor/condor_q-json.json"}
    jobs = adapter.parse_status(read(samples[adapter])).values() if adapter in samples else \
        SSH.parse_ps("c1", read("ssh/ps.txt")).values()
    assert jobs and all(adapter().never(j) is None for j in jobs)


def test_ssh_ps_only_session_leaders_are_jobs():
    st = SSH.parse_ps("c1", read("ssh/ps.txt"))
    assert set(st) == {"c1:26725"}   # 26724 is not a session leader: a reused PID, not ours
    assert st["c1:26725"].state is JobState.RUNNING and st["c1:26725"].node == "c1"
    assert SSH.parse_ps("c1", "26725 26725 Z\n")["c1:26725"].state is JobState.GONE   # ended


# --- headers --------------------------------------------------------------------------------

FULL = Resources(partition="gpuq", account="proj1", time="1-02:30", cpus=4, mem="8G", gpus=1,
                 job_name="rk-x", output="/home/a/jobs/%j.log", directives=["-extra yes"])


@pytest.mark.parametrize("name, expected", [
    ("pbs", ["#PBS -N rk-x", "#PBS -q gpuq", "#PBS -A proj1", "#PBS -l walltime=26:30:00",
             "#PBS -l select=1:ncpus=4:mem=8192mb:ngpus=1", "#PBS -r n", "#PBS -extra yes",
             "exec >>/home/a/jobs/\"$PBS_JOBID\".log 2>&1"]),
    ("torque", ["#PBS -l nodes=1:ppn=4:gpus=1", "#PBS -l mem=8192mb", "#PBS -l walltime=26:30:00"]),
    ("sge", ["#$ -N rk-x", "#$ -q gpuq", "#$ -A proj1", "#$ -l h_rt=26:30:00", "#$ -pe smp 4",
             "#$ -l h_vmem=2048M", "#$ -l gpu=1", "#$ -S /bin/bash", "#$ -r n", "#$ -j y",
             "#$ -o /home/a/jobs/$JOB_ID.log", "#$ -extra yes"]),
    ("lsf", ["#BSUB -J rk-x", "#BSUB -q gpuq", "#BSUB -P proj1", "#BSUB -W 26:30", "#BSUB -n 4",
             '#BSUB -R "span[hosts=1]"', "#BSUB -M 8192MB", '#BSUB -gpu "num=1"', "#BSUB -rn",
             "#BSUB -o /home/a/jobs/%J.log"]),
    ("htcondor", ["#HTCONDOR request_cpus = 4", "#HTCONDOR request_memory = 8192", "#HTCONDOR request_gpus = 1",
                  "#HTCONDOR accounting_group = proj1", "#HTCONDOR initialdir = /home/a/jobs",
                  "#HTCONDOR periodic_remove = JobStatus == 2 && time() - EnteredCurrentStatus > 95400",
                  "#HTCONDOR -extra yes"]),
    ("flux", ["#flux: --job-name=rk-x", "#flux: -N1", "#flux: -c4", "#flux: -g1", "#flux: -q gpuq",
              "#flux: -t 95400s", "#flux: --output=/home/a/jobs/{{id.dec}}.log", "#flux: -extra yes"]),
    ("ssh", ["exec >>/home/a/jobs/\"${RK_SSH_HOST}:$$\".log 2>&1"]),
])
def test_header_maps_common_resources(name, expected):
    header = get_scheduler(name).header(FULL)
    missing = [line for line in expected if line not in header]
    assert not missing, f"{name} header lacks {missing}:\n" + "\n".join(header)


@pytest.mark.parametrize("name", ["pbs", "torque", "sge", "lsf", "htcondor", "flux", "ssh"])
def test_header_leaves_unset_resources_to_the_site(name):
    header = "\n".join(get_scheduler(name).header(Resources(job_name="", output="")))
    assert not re.search(r"walltime|h_rt|-W |-t |periodic_remove|mem|ncpus|ppn|-pe |-n [0-9]|-q |gpu", header)


@pytest.mark.parametrize("name", ["pbs", "torque", "sge", "lsf", "htcondor", "flux", "ssh"])
def test_rendered_script_is_valid_bash(name):
    opts = KernelOptions(environ={}, python="/usr/bin/python3", time="30")
    text = render(get_scheduler(name), opts, opts.resources(job_name="rk-t", output="/tmp/o dir/%j.log"),
                  session="abc")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_log_redirect_names_the_file_after_the_job_id_at_run_time(tmp_path):
    line = log_redirect(f"{tmp_path}/it's here/%j.log", "$MY_JOB")[0]
    (tmp_path / "it's here").mkdir()
    subprocess.run(["bash", "-c", f"{line}; echo out; echo err >&2"], env={"MY_JOB": "42.srv"}, check=True)
    assert (tmp_path / "it's here" / "42.srv.log").read_text() == "out\nerr\n"


def test_htcondor_description_and_script_path():
    """The description and the script's place come from the Resources, not from the script text."""
    script = "#!/bin/bash\n" + "\n".join(HTCondor().header(FULL)) + "\necho hi\n"
    path = HTCondor.script_path(script, FULL)
    assert re.fullmatch(r"/home/a/jobs/rk-[0-9a-f]{16}\.sh", path)
    assert HTCondor.script_path(script, Resources()).startswith("./rk-")   # no log directory: the current one
    desc = HTCondor.description(FULL, path)
    assert desc.endswith(f"executable = {path}\nqueue\n") and "request_cpus = 4\n" in desc
    assert "echo hi" not in desc and "#HTCONDOR" not in desc
    # The header shows exactly what is submitted.
    assert [l[len("#HTCONDOR "):] for l in HTCondor().header(FULL) if l.startswith("#HTCONDOR ")] == \
        desc.splitlines()[:-2]
    # None of condor_submit's environment, whatever a site default says; only what the job needs.
    assert "getenv = false\n" in desc
    assert "environment = \"RK_JOB_ID=$(ClusterId).$(ProcId) PATH='$ENV(PATH)' LANG='$ENV(LANG)'\"\n" in desc


def test_ssh_hosts_come_from_the_partition():
    with pytest.raises(ValueError, match="partition"):
        hosts(Resources())
    assert hosts(Resources(partition="c1, c2")) == ["c1", "c2"]


# --- shared helpers ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, secs", [("30", 1800), ("30:15", 1815), ("01:00:00", 3600), ("2-0", 172800),
                                        ("1-12:30", 131400), ("1-00:00:05", 86405)])
def test_seconds_reads_slurm_wall_times(text, secs):
    assert seconds(text) == secs


def test_megabytes():
    assert [megabytes(m) for m in ("512", "512M", "4G", "1T", "2048K")] == [512, 512, 4096, 1048576, 2]


@pytest.mark.parametrize("hosts, first", [("c1", "c1"), ("c2/0*2+c1/1", "c2"), ("4*c2:2*c1", "c2"),
                                          ("c[1-2]", "c1"), ("node[07,09]", "node07"), ("slot1_2@c2.x", "c2.x"),
                                          ("all.q@c1", "c1"), ("", None), ("-", None)])
def test_first_host(hosts, first):
    assert first_host(hosts) == first


@pytest.mark.parametrize("hosts, every", [
    ("c[1-2]", ("c1", "c2")), ("c[01-02],d5", ("c01", "c02", "d5")), ("node[07,09-10]", ("node07", "node09", "node10")),
    ("c2/0*2+c1/1+c1/2", ("c2", "c1")), ("4*c2:2*c1", ("c2", "c1")), ("slot1@c2.x", ("c2.x",)), ("N/A", ())])
def test_host_list_expands_every_host_once(hosts, every):
    assert host_list(hosts) == every
