"""Generated kernel patch series: they apply with git am, pass checkpatch, and bisect-build."""

from __future__ import annotations

import re
import subprocess

import pytest

from msiforge import source_kernels
from msiforge.errors import InputError
from msiforge.generator import patches

from helpers import needs_kernel

#: (series, kernel series) pairs msiforge generates.
SERIES = [(name, k) for name in patches.available() for k in patches.info(name).kernels]
#: Kernel series whose source and kernel builds are too slow for make test: make test-all covers them.
SLOW_KERNELS = {"7.3"}


def _params(pairs, in_make_test=None, built=True):
    """One param per (series, kernel); slow on SLOW_KERNELS, and outside ``in_make_test`` when given.

    ``built``: the test builds the patched kernel (it runs once that is built: conftest.py).
    """
    return [pytest.param(n, k, id=f"{n}-{k}", marks=[
        *(needs_kernel(f"source:{k}+{n}", patches.info(n).arches[0]) if built else []),
        *([pytest.mark.slow] if k in SLOW_KERNELS or (in_make_test is not None and (n, k) not in in_make_test)
          else [])])
            for n, k in pairs]


def test_every_series_names_its_kernels_and_templates():
    for name in patches.available():
        si = patches.info(name)
        assert si.kernels and si.patches and si.subject
        assert all(k in source_kernels.SOURCE_PACKAGES for k in si.kernels)


@pytest.mark.parametrize("name,kernel", [("pci-ims", "6.1"), ("platform-msi-group", "6.12")])
def test_unsupported_kernel_is_one_line_error(name, kernel):
    if name not in patches.available():
        pytest.skip(f"series {name} not written yet")
    with pytest.raises(InputError, match=rf"patch series '{name}' does not support kernel {kernel} \(use "):
        patches.check_supported(name, kernel)


def test_unknown_series_is_one_line_error():
    with pytest.raises(InputError, match="patch series 'nope': unknown"):
        patches.info("nope")


@pytest.mark.parametrize("text", ["A B <a@b.c>", "msiforge <msiforge@localhost>"])
def test_identity(text):
    assert str(patches.parse_identity(text)) == text


@pytest.mark.parametrize("text", ["nobody", "<a@b.c>", "A <not-an-email>"])
def test_bad_identity(text):
    with pytest.raises(InputError):
        patches.parse_identity(text)


@pytest.fixture(scope="module", params=[pytest.param((n, k), id=f"{n}-{k}", marks=p.marks)
                                        for (n, k), p in zip(SERIES, _params(SERIES, built=False))])
def series(request, tmp_path_factory):
    name, kernel = request.param
    src = source_kernels.pristine(kernel)
    out = tmp_path_factory.mktemp(f"{name}-{kernel}")
    ident = patches.Identity("Test Person", "test@example.org")
    return name, src, patches.write_series(src, name, out / "series", ident), out


def test_series_applies_with_git_am(series):
    name, src, files, out = series
    tree = out / "tree"
    subprocess.run(["git", "clone", "-q", "--shared", str(src.tree), str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", "--detach", src.commit], check=True)
    am = subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", "am", "-q",
                         *map(str, files[1:])], capture_output=True, text=True)
    assert am.returncode == 0, am.stderr
    assert len(files) == len(patches.info(name).patches) + 1
    cover = files[0].read_text()
    assert "*** SUBJECT HERE ***" not in cover and "*** BLURB HERE ***" not in cover
    assert "files changed" in cover and f"base-commit: {src.commit}" in cover


def test_series_kernel_style(series):
    _, _, files, _ = series
    for f in files[1:]:
        text = f.read_text()
        assert "From: Test Person <test@example.org>" in text
        assert "Signed-off-by: Test Person <test@example.org>" in text
        subject = next(line for line in text.splitlines() if line.startswith("Subject: "))
        assert ": " in subject.split("] ", 1)[1], subject  # "subsys: Do thing"


def test_series_checkpatch_clean(series):
    _, src, files, _ = series
    for f in files[1:]:
        r = patches.checkpatch(src, f)
        assert (r.errors, r.warnings, r.checks) == (0, 0, 0), r.output


#: make test builds every patch of one series: pci-ims on 6.12, on top of the patched kernel the DKMS test
#: builds (ccache).  The others (platform-msi-group on 6.1, the arm64 cross build of vfio-platform-msi) are
#: the same capability on other trees and run in make test-all: they cost 6-7 minutes of a cold make test.
PER_PATCH_IN_MAKE_TEST = {("pci-ims", "6.12")}


@pytest.mark.build
@pytest.mark.parametrize("name,kernel", _params(SERIES, PER_PATCH_IN_MAKE_TEST))
def test_every_patch_builds(name, kernel):
    """Bisectable: the kernel builds (with the board config) after each patch, incrementally in one slot."""
    arch = patches.info(name).arches[0]
    for tgt in source_kernels.series_targets(f"source:{kernel}+{name}", arch):
        k = source_kernels.build_target(tgt)
        assert k.vmlinuz.is_file(), tgt.spec


# A module per series that uses the new API on an edu device (1234:11e8): it
# allocates interrupts, fires each stored message once by edu DMA to its
# address, and checks that each handler ran exactly once.
_EDU_C = r"""
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/msi.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/dma-mapping.h>
#include <linux/delay.h>
#include <linux/io-64-nonatomic-lo-hi.h>

#define NSLOTS 8
static struct msi_msg slots[NSLOTS];
static atomic_t hits[NSLOTS];
static void __iomem *bar;
static u32 *buf;
static dma_addr_t buf_dma;

static irqreturn_t smoke_handler(int irq, void *p)
{
	atomic_inc(&hits[(long)p]);
	return IRQ_HANDLED;
}

static void edu_dma(u64 src, u64 dst, u32 dir)
{
	writeq(src, bar + 0x80);
	writeq(dst, bar + 0x88);
	writeq(4, bar + 0x90);
	writeq(1 | dir, bar + 0x98);
	while (readq(bar + 0x98) & 1)
		msleep(5);
}

/* Send slot i's stored message: its data word into the edu buffer, then to its address. */
static void fire(int i)
{
	*buf = slots[i].data;
	edu_dma(buf_dma, 0x40000, 0);
	edu_dma(0x40000, ((u64)slots[i].address_hi << 32) | slots[i].address_lo, 2);
}

static int edu_setup(struct pci_dev *pdev)
{
	int ret = pcim_enable_device(pdev);

	if (ret)
		return ret;
	pci_set_master(pdev);
	bar = pcim_iomap(pdev, 0, 0);
	if (!bar || dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(32)))
		return -EIO;
	buf = dmam_alloc_coherent(&pdev->dev, 4, &buf_dma, GFP_KERNEL);
	return buf ? 0 : -ENOMEM;
}

static int check(int i, int virq, const char *what)
{
	int n, t;

	/* A loaded host can be slow to run the vCPU that takes the interrupt: wait up to 2 s. */
	for (t = 0; t < 200 && !atomic_read(&hits[i]); t++)
		msleep(10);
	msleep(20);
	n = atomic_read(&hits[i]);

	pr_info("smoke: %s slot %d virq %d message %#x/%#x hits %d\n", what, i, virq,
		slots[i].address_lo, slots[i].data, n);
	atomic_set(&hits[i], 0);
	return n == 1;
}
"""

_PCI_IMS_C = _EDU_C + r"""
static void ims_mask(struct irq_data *d) { }
static void ims_unmask(struct irq_data *d) { }
static void ims_write(struct irq_data *d, struct msi_msg *msg) { slots[d->hwirq] = *msg; }

static const struct msi_domain_template tmpl = {
	.chip = { .name = "SMOKE-IMS", .irq_mask = ims_mask, .irq_unmask = ims_unmask,
		  .irq_write_msi_msg = ims_write },
	.info = { .flags = MSI_FLAG_ALLOC_SIMPLE_MSI_DESCS | MSI_FLAG_FREE_MSI_DESCS,
		  .bus_token = DOMAIN_BUS_PCI_DEVICE_IMS },
};

static int smoke_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct msi_map map[4];
	int i, ok = 1, ret = edu_setup(pdev);

	if (ret)
		return ret;
	if (!pci_create_ims_domain(pdev, &tmpl, NSLOTS, NULL)) {
		pr_err("smoke: result fail (no IMS domain)\n");
		return -ENODEV;
	}
	for (i = 0; i < 4; i++) {
		map[i] = pci_ims_alloc_irq(pdev, NULL, NULL);
		if (map[i].index < 0 || request_irq(map[i].virq, smoke_handler, 0, "smoke-ims", (void *)(long)map[i].index)) {
			pr_err("smoke: result fail (alloc %d: %d)\n", i, map[i].index);
			return -ENODEV;
		}
	}
	pr_info("smoke: domain %s\n", irq_get_irq_data(map[0].virq)->domain->name);
	for (i = 0; i < 4; i++)
		fire(map[i].index);
	msleep(50);
	for (i = 0; i < 4; i++)
		ok &= check(map[i].index, map[i].virq, "ims");
	for (i = 0; i < 4; i++) {
		free_irq(map[i].virq, (void *)(long)map[i].index);
		pci_ims_free_irq(pdev, map[i]);
	}
	pr_info("smoke: result %s\n", ok ? "pass" : "fail");
	return 0;
}
"""

_PLATFORM_MSI_C = _EDU_C + r"""
static void pm_mask(struct msi_desc *desc) { }
static void pm_unmask(struct msi_desc *desc) { }
static void pm_write(struct msi_desc *desc, struct msi_msg *msg) { slots[desc->msi_index] = *msg; }

static const struct platform_msi_ops ops = {
	.irq_mask = pm_mask, .irq_unmask = pm_unmask, .write_msg = pm_write,
};

static int fire_group(struct device *dev, unsigned int gid, int nvec)
{
	int i, ok = 1;
	unsigned int virq[8];

	for (i = 0; i < nvec; i++) {
		virq[i] = platform_msi_group_virq(dev, gid, i);
		if (!virq[i] || request_irq(virq[i], smoke_handler, 0, "smoke-pmsi",
					   (void *)(long)irq_get_msi_desc(virq[i])->msi_index))
			return 0;
	}
	for (i = 0; i < nvec; i++)
		fire(irq_get_msi_desc(virq[i])->msi_index);
	msleep(50);
	for (i = 0; i < nvec; i++) {
		int idx = irq_get_msi_desc(virq[i])->msi_index;

		ok &= check(idx, virq[i], "group");
		free_irq(virq[i], (void *)(long)idx);
	}
	return ok;
}

static int smoke_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	unsigned int a, b, c, d;
	int ok = 1, ret = edu_setup(pdev);

	if (ret)
		return ret;
	if (platform_msi_domain_alloc_irqs_group(&pdev->dev, 2, &ops, &a) ||
	    platform_msi_domain_alloc_irqs_group(&pdev->dev, 3, &ops, &b) ||
	    platform_msi_domain_alloc_irqs_group(&pdev->dev, 2, &ops, &c)) {
		pr_err("smoke: result fail (group allocation)\n");
		return -ENODEV;
	}
	pr_info("smoke: groups %u %u %u, domain %s\n", a, b, c,
		irq_get_irq_data(platform_msi_group_virq(&pdev->dev, a, 0))->domain->name);
	ok &= fire_group(&pdev->dev, a, 2) && fire_group(&pdev->dev, b, 3) && fire_group(&pdev->dev, c, 2);
	platform_msi_domain_free_irqs_group(&pdev->dev, b);
	if (platform_msi_domain_alloc_irqs_group(&pdev->dev, 3, &ops, &d))
		ok = 0;
	/* The freed middle range (indices 2..4) is reused */
	ok &= irq_get_msi_desc(platform_msi_group_virq(&pdev->dev, d, 0))->msi_index == 2;
	ok &= fire_group(&pdev->dev, d, 3);
	platform_msi_domain_free_irqs_group(&pdev->dev, a);
	platform_msi_domain_free_irqs_group(&pdev->dev, c);
	platform_msi_domain_free_irqs_group(&pdev->dev, d);
	pr_info("smoke: result %s\n", ok ? "pass" : "fail");
	return 0;
}
"""

_TAIL_C = r"""
static const struct pci_device_id smoke_ids[] = { { PCI_DEVICE(0x1234, 0x11e8) }, { } };
MODULE_DEVICE_TABLE(pci, smoke_ids);
static struct pci_driver smoke_driver = { .name = "smoke", .id_table = smoke_ids, .probe = smoke_probe };
module_pci_driver(smoke_driver);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("msiforge patch series smoke test");
"""

SMOKE = {"pci-ims": _PCI_IMS_C + _TAIL_C, "platform-msi-group": _PLATFORM_MSI_C + _TAIL_C}


@pytest.mark.build
@pytest.mark.vm
@pytest.mark.parametrize("name,kernel", _params([(n, k) for n, k in SERIES if n in SMOKE]))
def test_patched_kernel_delivers_interrupts(name, kernel, tmp_path):
    """Boot the patched kernel on q35 + intel-iommu intremap=on with an edu; a module uses the new API."""
    import pexpect

    from msiforge.vmtests import console, initramfs, qemu

    k = source_kernels.build(f"source:{kernel}+{name}")
    (tmp_path / "smoke.c").write_text(SMOKE[name])
    (tmp_path / "Kbuild").write_text("obj-m += smoke.o\n")
    proc = subprocess.run(["make", "-s", "-C", str(k.build_dir), f"M={tmp_path}", "modules"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    script = tmp_path / "run.sh"
    script.write_text("insmod /modules/smoke.ko\n")
    initrd = initramfs.build(tmp_path / "initrd.cpio", [tmp_path / "smoke.ko"], script)
    argv = [qemu.qemu_binary(), "-M", "q35", "-accel", "tcg", "-smp", "2", "-m", "512M",
            "-device", "intel-iommu,intremap=on", "-device", "edu,dma_mask=0xffffffff",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(k.vmlinuz), "-initrd", str(initrd), "-append", "console=ttyS0 panic=-1"]
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=180)
    child.logfile_read = (tmp_path / "console.log").open("w")
    child.expect(r"smoke: result (\w+)" + console.EOL)  # the whole word, not the part that has arrived
    result = child.match.group(1)
    child.expect(pexpect.EOF)
    log = (tmp_path / "console.log").read_text()
    assert result == "pass", log
    assert "IR-" in log or "INTEL-IR" in log or "DMAR-IR" in log
    assert not re.search(r"WARNING:|BUG:|Oops", log), log


@pytest.mark.build
@pytest.mark.vm
@pytest.mark.source_kernels("source:6.12+pci-ims", "source:6.1+platform-msi-group")
def test_generated_drivers_use_the_patched_apis(tmp_path):
    """`msiforge run` on both patched kernels: the generated drivers use the series' APIs and pass every scenario.

    On 6.12+pci-ims ims0 gets a PCI/IMS domain from its template; on
    6.1+platform-msi-group pmsi0 allocates platform-MSI groups at runtime.
    The other device keeps its module-local domain on each.
    """
    import json

    from helpers import msiforge

    run_dir = tmp_path / "run"
    proc = msiforge("run", "--kernel", "source:6.12+pci-ims", "--kernel", "source:6.1+platform-msi-group",
                    "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((run_dir / "results.json").read_text())
    expect = {
        "6.12": {"ims0": ("patched", "pci-ims"), "pmsi0": ("module-local", "module-local")},
        "6.1": {"ims0": ("module-local", "module-local"), "pmsi0": ("patched", "platform-msi-group")},
    }
    assert len(res["kernels"]) == 2
    for k in res["kernels"]:
        series = ".".join(k["release"].split(".")[:2])
        manifest = json.loads((run_dir / "gen" / k["release"] / "manifest.json").read_text())
        assert {d["name"]: (d["strategy"], d["api"]) for d in manifest["devices"]} == expect[series]
        assert [s["name"] for s in k["scenarios"]] == ["deliver", "mask", "affinity", "groups", "unload"]
        assert all(s["status"] == "pass" for s in k["scenarios"]), k
        ktap = (run_dir / k["release"] / "ktap.txt").read_text()
        for dev, (_, api) in expect[series].items():
            assert f"# {dev}: strategy {expect[series][dev][0]} (api {api})" in ktap
        assert f"at runtime ({'pci-ims' if series == '6.12' else 'platform-msi-group'}), group 1 freed and " \
               f"reallocated at slot {4 if series == '6.12' else 2}" in ktap
    domains = (run_dir / res["kernels"][0]["release"] / "ktap.txt").read_text()
    assert "domain IR-IMS-ims0-" in domains  # the PCI/IMS secondary domain, on the remapping parent


@pytest.mark.parametrize("spec,message", [
    ("source:6.1+pci-ims", "patch series 'pci-ims' does not support kernel 6.1 (use source:6.12+pci-ims, source:7.3+pci-ims)"),
    ("source:6.12+nope", "patch series 'nope': unknown (known: "),
])
def test_run_with_unsupported_series_is_one_line_error_and_writes_nothing(spec, message, tmp_path):
    from helpers import msiforge

    proc = msiforge("run", "--kernel", spec, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"msiforge: error: {message}") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory
