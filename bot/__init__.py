"""prefloop's collection side: users, the database, the queue and the front ends."""
