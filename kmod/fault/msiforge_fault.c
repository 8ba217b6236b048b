// SPDX-License-Identifier: GPL-2.0
/*
 * msiforge_fault: misbehave on purpose, so that msiforge's own tests can
 * check that each kind of guest failure gets its own verdict.  Test-only:
 * never part of a generated driver.
 */

#include <linux/bug.h>
#include <linux/compiler.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/printk.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/string.h>

static char *what = "warn";
module_param(what, charp, 0444);
MODULE_PARM_DESC(what,
		 "warn | oops | bug | call-trace | panic; on a debug kernel: lockdep | kasan | atomic-sleep");

static int *msiforge_fault_ptr;

static DEFINE_MUTEX(msiforge_fault_a);
static DEFINE_MUTEX(msiforge_fault_b);

/*
 * The reports of a debug kernel (source:...+debug).  Each is one the kernel
 * survives: the module loads and the scenarios run after it.
 */
static int msiforge_fault_debug(void)
{
	if (!strcmp(what, "lockdep")) {
		/*
		 * A then B, later B then A: one thread never deadlocks, but
		 * lockdep records the first order and reports the second as a
		 * possible circular locking dependency.
		 */
		mutex_lock(&msiforge_fault_a);
		mutex_lock(&msiforge_fault_b);
		mutex_unlock(&msiforge_fault_b);
		mutex_unlock(&msiforge_fault_a);
		mutex_lock(&msiforge_fault_b);
		mutex_lock(&msiforge_fault_a);
		mutex_unlock(&msiforge_fault_a);
		mutex_unlock(&msiforge_fault_b);
		return 0;
	}
	if (!strcmp(what, "kasan")) {
		/* One byte past a 16-byte allocation: a slab-out-of-bounds read. */
		size_t size = 16;
		char *buf = kmalloc(size, GFP_KERNEL);

		if (!buf)
			return -ENOMEM;
		OPTIMIZER_HIDE_VAR(size);
		pr_info("msiforge_fault: read past the end: %d\n", READ_ONCE(buf[size]));
		kfree(buf);
		return 0;
	}
	if (!strcmp(what, "atomic-sleep")) {
		/* A might-sleep point with preemption off; nothing actually sleeps. */
		preempt_disable();
		might_sleep();
		preempt_enable();
		return 0;
	}
	return -EINVAL;
}

static int msiforge_fault_oops(void *unused)
{
	/* A NULL dereference the compiler cannot see through. */
	WRITE_ONCE(*READ_ONCE(msiforge_fault_ptr), 1);
	return 0;
}

/*
 * The oops happens in a thread of its own, which it kills.  An oops in the
 * module's init would kill insmod inside the module loader and leave the
 * loader's state behind (6.12's idempotent_init_module() keeps the dead
 * task's on-stack entry in its hash list): a later insmod could oops or
 * spin on it, so the run would depend on where that entry hashed.
 */
static int msiforge_fault_oops_thread(void)
{
	struct task_struct *t;
	int i;

	t = kthread_create(msiforge_fault_oops, NULL, "msiforge_oops");
	if (IS_ERR(t))
		return PTR_ERR(t);
	get_task_struct(t);
	wake_up_process(t);
	/* Return once it is dead: the oops is on the console before the scenarios start. */
	for (i = 0; i < 250 && !READ_ONCE(t->exit_state); i++)
		msleep(20);
	put_task_struct(t);
	return 0;
}

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
	if (!strcmp(what, "oops"))
		return msiforge_fault_oops_thread();
	return msiforge_fault_debug();
}

static void __exit msiforge_fault_exit(void)
{
}

module_init(msiforge_fault_init);
module_exit(msiforge_fault_exit);

MODULE_DESCRIPTION("msiforge: injected guest faults for the harness's own tests");
MODULE_LICENSE("GPL");
