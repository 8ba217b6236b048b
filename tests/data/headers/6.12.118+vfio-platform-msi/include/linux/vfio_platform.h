int vfio_platform_register_msi(struct vfio_platform_msi_ops *ops);
void vfio_platform_unregister_msi(struct vfio_platform_msi_ops *ops);
