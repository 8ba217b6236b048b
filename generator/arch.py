"""Per-architecture data for the driver template.

Architecture differences live here as data, not as copies of the template.
"""

ARCHES: dict[str, dict] = {
    "x86_64": {
        "name": "x86_64",
        "includes": ["asm/hw_irq.h", "asm/irqdomain.h"],
        # Fallback MSI parent when the device has none recorded.
        "default_parent": "x86_vector_domain",
        # The slot index travels to the domain's alloc in irq_alloc_info.
        "hwirq_expr": "((struct irq_alloc_info *)arg)->hwirq",
    },
}
