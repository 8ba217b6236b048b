# SPDX-License-Identifier: GPL-2.0
#
# Remember Kbuild's compiler probes between module builds (kmod/build.py).
#
# Every "make M=dir modules" parses the kernel's top Makefile again, and with
# it every $(call cc-option,...), cc-disable-warning, as-instr, ld-option:
# each a try-run that starts a shell, the compiler, cc1 and as (30 of them
# for a 6.12 x86 kernel, most of the half second a rebuild of one file takes
# here).  Their answers depend only on the probe's command line and on the
# compiler, which is fixed per file (MSIFORGE_PROBES names one per kernel
# build directory and toolchain).  Kbuild itself kept such a cache in
# 4.15-4.20 (.cache.mk).
#
# Read with "make --eval 'include .../probes.mk'" (before any makefile, so
# the override below wins over scripts/Makefile.compiler's try-run, also in
# sub-makes, which inherit --eval).  A known probe answers from
# MSIFORGE_PROBES; an unknown one runs as in Makefile.compiler and its answer
# is appended to MSIFORGE_PROBES_NEW, which the caller merges into
# MSIFORGE_PROBES only after the build succeeded.

define msiforge-nl


endef

# One line per probe: "y <command>" (it succeeded) or "n <command>".
msiforge-known := $(msiforge-nl)$(file <$(MSIFORGE_PROBES))$(msiforge-nl)

# Makefile.compiler's try-run, answering y or n (empty: the shell failed
# around the probe, as when its temporary directory cannot be made).
msiforge-run = $(shell set -e;			\
	TMP=$(TMPOUT)/tmp;			\
	trap "rm -rf $(TMPOUT)" EXIT;		\
	mkdir -p $(TMPOUT);			\
	if ($(1)) >/dev/null 2>&1;		\
	then echo y;				\
	else echo n;				\
	fi)

# try-run hands back its answer through the shell's echo "...": an answer
# that the shell would change (quotes, backslashes, $, `) is echoed as
# there; any other is itself.
msiforge-echo = $(if $(findstring ",$(1))$(findstring \,$(1))$(findstring $$,$(1))$(findstring `,$(1)),$(shell echo "$(1)"),$(1))

# $(1): y, n or empty; $(2): the command; $(3), $(4): try-run's answers.
msiforge-answer = $(if $(1),$(file >>$(MSIFORGE_PROBES_NEW),$(1) $(2)))$(if $(filter y,$(1)),$(call msiforge-echo,$(3)),$(if $(1),$(call msiforge-echo,$(4))))

override try-run = $(if $(findstring $(msiforge-nl)y $(1)$(msiforge-nl),$(msiforge-known)),$(call msiforge-echo,$(2)),$(if $(findstring $(msiforge-nl)n $(1)$(msiforge-nl),$(msiforge-known)),$(call msiforge-echo,$(3)),$(call msiforge-answer,$(call msiforge-run,$(1)),$(1),$(2),$(3))))
