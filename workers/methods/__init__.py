"""Discovery methods: EAP, EAP-IG, ACDC (and others registered in ``registry``)."""
