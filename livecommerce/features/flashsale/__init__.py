"""Flash sales (秒杀) and their orders: reserve, pay, cancel, expire."""
