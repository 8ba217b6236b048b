// SPDX-License-Identifier: GPL-2.0
/*
 * msiforge_fault: misbehave on purpose, so that msiforge's own tests can
 * check that each kind of guest failure gets its own verdict.  Test-only:
 * never part of a generated driver.
 */

#include <linux/bug.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/preempt.h>
#include <linux/printk.h>
#include <linux/string.h>

static char *what = "warn";
module_param(what, charp, 0444);
MODULE_PARM_DESC(what, "warn | oops | bug | call-trace | panic");

static int *msiforge_fault_ptr;

static int __init msiforge_fault_init(void)
{
	if (!strcmp(what, "warn")) {
		WARN(1, "msiforge_fault: injected warning\n");
		return 0;
	}
	if (!strcmp(what, "panic"))
		panic("msiforge_fault: injected panic\n");
	if (!strcmp(what, "bug")) {
		/*
		 * Sleeping with preemption off: "BUG: scheduling while atomic",
		 * a BUG report the kernel survives (no oops), on any config
		 * with a preemption count.  The kernel's recovery then WARNs
		 * of a preemption imbalance when the initcall returns.
		 */
		preempt_disable();
		msleep(1);
		preempt_enable();
		return 0;
	}
	if (!strcmp(what, "call-trace")) {
		/* A call trace with no WARN, BUG or oops around it. */
		dump_stack();
		return 0;
	}
	if (!strcmp(what, "oops")) {
		/* A NULL dereference the compiler cannot see through. */
		WRITE_ONCE(*READ_ONCE(msiforge_fault_ptr), 1);
		return 0;
	}
	return -EINVAL;
}

static void __exit msiforge_fault_exit(void)
{
}

module_init(msiforge_fault_init);
module_exit(msiforge_fault_exit);

MODULE_DESCRIPTION("msiforge: injected guest faults for the harness's own tests");
MODULE_LICENSE("GPL");
